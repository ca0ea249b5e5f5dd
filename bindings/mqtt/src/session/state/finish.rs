//! The end of a session: what each side is told and what is logged.

use mqtt_bytes_v5::{DisconnectReasonCode, Packet};
use zilla_engine::telemetry::text;

use super::Session;
use crate::codec::{self, Reason, Version};
use crate::session::end::{disconnect, Closing, End};

impl Session {
    /// Logs `end` and queues what each side needs to know.
    pub(crate) fn finish(&mut self, end: End) -> Closing {
        let end = match end {
            // Only an MQTT 3.1.1 broker ends a session by closing; from an
            // MQTT 5 broker a close without DISCONNECT is a failure.
            End::UpstreamClosed(index) if self.upstreams[index].version != Version::V4 => {
                End::UpstreamLost(index, "closed the connection without DISCONNECT".into())
            }
            end => end,
        };
        self.metrics.session_ended(&end);
        let client_id = text(&self.client_id).to_string();
        let events = self.config.events.clone();
        let peer = self.peer.clone();
        match end {
            End::ClientDisconnected => {
                events.info(
                    "MQTT_SESSION_ENDED",
                    format!("client {peer} id {client_id} disconnected"),
                );
                Closing::FlushAll
            }
            End::ClientLost(why) => {
                events.info(
                    "MQTT_SESSION_ENDED",
                    format!("client {peer} id {client_id} lost: {why}; upstreams closed abruptly so wills fire"),
                );
                Closing::Abort
            }
            End::Refuse(reason, why) => {
                events.warn(
                    "MQTT_SESSION_REFUSED",
                    format!(
                        "client {peer} id {client_id}: {why}; DISCONNECT {}",
                        Reason(reason as u8)
                    ),
                );
                self.disconnect_client(reason, why)
            }
            End::UpstreamLost(index, why) => {
                let name = self.upstreams[index].name.clone();
                events.warn(
                    "MQTT_UPSTREAM_LOST",
                    format!("client {peer} id {client_id}: upstream {name} {why}"),
                );
                self.disconnect_client(
                    DisconnectReasonCode::UnspecifiedError,
                    format!("upstream {name} unavailable"),
                )
            }
            End::UpstreamClosed(index) => {
                let name = self.upstreams[index].name.clone();
                events.info(
                    "MQTT_SESSION_TAKEN_OVER",
                    format!(
                        "client {peer} id {client_id}: upstream {name} (MQTT 3.1.1) closed the session: \
                         taken over through another proxy, or its broker went away (3.1.1 cannot say which)"
                    ),
                );
                self.disconnect_client(
                    DisconnectReasonCode::SessionTakenOver,
                    format!("upstream {name} closed the session"),
                )
            }
            End::UpstreamDisconnected(index, disconnect)
                if disconnect.reason_code == DisconnectReasonCode::SessionTakenOver =>
            {
                let name = self.upstreams[index].name.clone();
                events.info(
                    "MQTT_SESSION_TAKEN_OVER",
                    format!(
                        "client {peer} id {client_id}: the broker behind upstream {name} ended the session (0x8E session taken over): \
                         the same client id connected elsewhere, e.g. through another proxy"
                    ),
                );
                if self.version == Version::V5 {
                    self.send_client(&Packet::Disconnect(*disconnect));
                }
                Closing::CloseClient
            }
            End::UpstreamDisconnected(index, disconnect) => {
                let name = self.upstreams[index].name.clone();
                events.info(
                    "MQTT_UPSTREAM_DISCONNECTED",
                    format!(
                        "client {peer} id {client_id}: upstream {name} sent DISCONNECT {}",
                        Reason(disconnect.reason_code as u8)
                    ),
                );
                if self.version == Version::V5 {
                    self.send_client(&Packet::Disconnect(*disconnect));
                }
                Closing::CloseClient
            }
            End::TakenOver => {
                events.info(
                    "MQTT_SESSION_TAKEN_OVER",
                    format!(
                        "client {peer} id {client_id}: a newer connection took the session over"
                    ),
                );
                self.disconnect_client(
                    DisconnectReasonCode::SessionTakenOver,
                    "session taken over".into(),
                )
            }
            End::Administrative => {
                events.info(
                    "MQTT_SESSION_DISCONNECTED",
                    format!(
                        "client {peer} id {client_id}: disconnected by an operator (zilla disconnect); DISCONNECT 0x98 administrative action"
                    ),
                );
                self.disconnect_client(
                    DisconnectReasonCode::AdministrativeAction,
                    "disconnected by an operator".into(),
                )
            }
            End::Expired => {
                events.warn(
                    "MQTT_SESSION_EXPIRED",
                    format!("client {peer} id {client_id}: credentials expired; DISCONNECT 0xA0 maximum connect time"),
                );
                if self.version == Version::V5 {
                    codec::write_disconnect(
                        codec::MAXIMUM_CONNECT_TIME,
                        Some("credentials expired"),
                        &mut self.client_out,
                    );
                }
                Closing::CloseClient
            }
            End::BadAuthenticationMethod(why) => {
                events.warn(
                    "MQTT_SESSION_REFUSED",
                    format!("client {peer} id {client_id}: {why}; DISCONNECT 0x8C bad authentication method"),
                );
                codec::write_disconnect(
                    codec::BAD_AUTHENTICATION_METHOD,
                    Some(&why),
                    &mut self.client_out,
                );
                Closing::CloseClient
            }
            End::Draining => {
                for link in &mut self.upstreams {
                    // The client did not choose to leave: its will is due.
                    link.send(&Packet::Disconnect(disconnect(
                        DisconnectReasonCode::DisconnectWithWillMessage,
                        None,
                    )));
                }
                if self.version == Version::V5 {
                    let mut goodbye = disconnect(
                        DisconnectReasonCode::ServerShuttingDown,
                        Some("server shutting down".into()),
                    );
                    if let Some(properties) = goodbye.properties.as_mut() {
                        // Where to reconnect: another replica, through the
                        // load balancer.
                        properties.server_reference = self.config.server_reference.clone();
                    }
                    self.send_client(&Packet::Disconnect(goodbye));
                }
                Closing::FlushUpstreamsThenCloseClient
            }
        }
    }

    /// Tells a v5 client why the session ends (3.1.1 has no server DISCONNECT).
    fn disconnect_client(&mut self, reason: DisconnectReasonCode, why: String) -> Closing {
        if self.version == Version::V5 {
            self.send_client(&Packet::Disconnect(disconnect(reason, Some(why))));
        }
        Closing::CloseClient
    }
}
