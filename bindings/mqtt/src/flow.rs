//! Flow control settings of an mqtt server (beyond Zilla): how many QoS 1/2
//! publishes a 5.0 client may have in flight toward the proxy, and how many
//! bytes a session may hold while a broker's or the client's window is full.
//!
//! The proxy owns flow control on each side instead of passing a broker's
//! window through: a publish beyond a broker's Receive Maximum waits in the
//! session, and when the session's buffer is full the proxy stops reading
//! from the client (TCP backpressure) instead of disconnecting it.

use serde::{Deserialize, Serialize};

/// `options.flow` of an mqtt server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FlowOptions {
    /// The Receive Maximum the proxy advertises to MQTT 5 clients (default
    /// 65535); a 5.0 client that exceeds it gets DISCONNECT 0x93.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_maximum: Option<u16>,
    /// Bytes of client publishes a session keeps while its brokers' windows
    /// are full, before the proxy stops reading from the client (default 256 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_buffer: Option<u32>,
    /// Bytes of messages for the client a session keeps while the client's
    /// window is full, before the proxy stops reading from its brokers
    /// (default 256 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_buffer: Option<u32>,
}

/// Default Receive Maximum advertised to MQTT 5 clients: as much as MQTT allows.
pub(crate) const DEFAULT_RECEIVE_MAXIMUM: u16 = u16::MAX;
/// Default bytes of waiting publishes, each way.
pub(crate) const DEFAULT_BUFFER: u32 = 256 * 1024;

/// Flow control as a server runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flow {
    pub(crate) receive_maximum: u16,
    pub(crate) publish_buffer: usize,
    pub(crate) delivery_buffer: usize,
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            receive_maximum: DEFAULT_RECEIVE_MAXIMUM,
            publish_buffer: DEFAULT_BUFFER as usize,
            delivery_buffer: DEFAULT_BUFFER as usize,
        }
    }
}

impl Flow {
    /// The settings `options` give, or why they cannot be used (with the
    /// key's path under `options.flow`).
    pub(crate) fn new(options: Option<&FlowOptions>) -> Result<Self, (&'static str, String)> {
        let Some(options) = options else {
            return Ok(Self::default());
        };
        let receive_maximum = options.receive_maximum.unwrap_or(DEFAULT_RECEIVE_MAXIMUM);
        if receive_maximum == 0 {
            return Err((
                "receive-maximum",
                "must be at least 1 (MQTT allows 1 to 65535)".into(),
            ));
        }
        let buffer = |value: Option<u32>, key: &'static str| match value {
            Some(0) => Err((key, "must be at least 1 byte".to_owned())),
            value => Ok(value.unwrap_or(DEFAULT_BUFFER) as usize),
        };
        Ok(Self {
            receive_maximum,
            publish_buffer: buffer(options.publish_buffer, "publish-buffer")?,
            delivery_buffer: buffer(options.delivery_buffer, "delivery-buffer")?,
        })
    }
}

/// The bytes a publish is counted for while it waits: what dominates its
/// size on the wire, without encoding it.
pub(crate) fn weight(publish: &mqtt_bytes_v5::Publish) -> usize {
    let properties = publish.properties.as_ref().map_or(0, |p| {
        p.user_properties
            .iter()
            .map(|(k, v)| k.len() + v.len() + 5)
            .sum::<usize>()
            + p.content_type.as_ref().map_or(0, |t| t.len())
            + p.response_topic.as_ref().map_or(0, |t| t.len())
            + p.correlation_data.as_ref().map_or(0, |d| d.len())
    });
    publish.topic.len() + publish.payload.len() + properties + 8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        assert_eq!(Flow::new(None), Ok(Flow::default()));
        let options: FlowOptions =
            serde_yaml::from_str("receive-maximum: 100\npublish-buffer: 4096\n").unwrap();
        let flow = Flow::new(Some(&options)).unwrap();
        assert_eq!(flow.receive_maximum, 100);
        assert_eq!(flow.publish_buffer, 4096);
        assert_eq!(flow.delivery_buffer, DEFAULT_BUFFER as usize);
        let zero: FlowOptions = serde_yaml::from_str("receive-maximum: 0").unwrap();
        assert_eq!(Flow::new(Some(&zero)).unwrap_err().0, "receive-maximum");
        assert!(serde_yaml::from_str::<FlowOptions>("window: 3").is_err());
    }
}
