//! How a WebSocket ends: which close code answers which fault (RFC 6455
//! §7.4.1), and what the exit is told.
//!
//! A fault in what the peer sent fails the connection: a Close frame with the
//! code naming the fault goes out, then the exit's read returns an error. A
//! transport that breaks can carry no Close frame; one that simply ends is an
//! EOF, as a TCP close would be.

use std::io;

use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// A fault that fails the connection with a Close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The close code sent.
    pub(crate) code: CloseCode,
    /// The close reason sent (short: a Close frame holds 123 bytes of it).
    pub(crate) reason: &'static str,
    /// What the exit's read reports afterwards.
    pub(crate) detail: String,
}

impl Failure {
    /// The Close frame announcing this failure.
    pub(crate) fn frame(&self) -> CloseFrame {
        CloseFrame {
            code: self.code,
            reason: self.reason.into(),
        }
    }

    /// The error the exit reads once the Close frame is out.
    pub(crate) fn error(&self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self.detail.clone())
    }

    /// A text frame where the subprotocol allows binary frames only: MQTT 5
    /// §6.0 ("If any other type of data frame is received the recipient MUST
    /// close the Network Connection").
    pub(crate) fn text_frame(protocol: &str) -> Self {
        Self {
            code: CloseCode::Unsupported,
            reason: "binary frames only",
            detail: format!(
                "text frame received; subprotocol `{protocol}` allows binary frames only"
            ),
        }
    }
}

/// What a read error means for the connection.
#[derive(Debug)]
pub(crate) enum Ending {
    /// The peer broke the protocol or a limit: send a Close frame, then fail.
    Fail(Failure),
    /// The transport ended (without a Close frame): EOF.
    Eof,
    /// The transport failed: report its error; nothing more can be sent.
    Transport(io::Error),
}

/// Classifies an error tungstenite reported while reading.
pub(crate) fn classify(error: WsError) -> Ending {
    let (code, reason) = match error {
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return Ending::Eof,
        WsError::Io(error) => return Ending::Transport(error),
        // Unmasked client frames, reserved bits, unknown opcodes, bad
        // fragmentation, malformed Close frames.
        WsError::Protocol(_) => (CloseCode::Protocol, "protocol error"),
        // A frame or message over the limit, refused from its header.
        WsError::Capacity(_) => (CloseCode::Size, "message too big"),
        WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8 in text"),
        _ => (CloseCode::Error, "internal error"),
    };
    Ending::Fail(Failure {
        code,
        reason,
        detail: error.to_string(),
    })
}

/// The io error a write (or flush) reports for a tungstenite error.
pub(crate) fn write_error(error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => error,
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::SendAfterClosing) => closed(),
        WsError::Capacity(error) => io::Error::new(io::ErrorKind::InvalidInput, error),
        error => io::Error::other(error),
    }
}

/// The error writes report once the WebSocket is closed.
pub(crate) fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
}

/// How the peer's Close frame reads to the exit: `None` for a normal end
/// (1000, 1001 or no code), else the error to report after EOF would have been.
pub(crate) fn peer_close_error(frame: Option<&CloseFrame>) -> Option<io::Error> {
    let frame = frame?;
    match frame.code {
        CloseCode::Normal | CloseCode::Away | CloseCode::Status => None,
        code => Some(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("peer closed the WebSocket with {code} ({})", frame.reason),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::error::CapacityError;

    fn code_of(error: WsError) -> Option<u16> {
        match classify(error) {
            Ending::Fail(failure) => Some(failure.code.into()),
            _ => None,
        }
    }

    #[test]
    fn protocol_faults_close_with_1002() {
        for fault in [
            ProtocolError::UnmaskedFrameFromClient,
            ProtocolError::NonZeroReservedBits,
            ProtocolError::UnknownDataFrameType(3),
            ProtocolError::UnknownControlFrameType(11),
            ProtocolError::FragmentedControlFrame,
            ProtocolError::UnexpectedContinueFrame,
            ProtocolError::InvalidCloseSequence,
        ] {
            assert_eq!(code_of(WsError::Protocol(fault)), Some(1002));
        }
    }

    #[test]
    fn limits_close_with_1009_and_bad_text_with_1007() {
        let too_long = CapacityError::MessageTooLong {
            size: 1 << 30,
            max_size: 1 << 20,
        };
        assert_eq!(code_of(WsError::Capacity(too_long)), Some(1009));
        assert_eq!(code_of(WsError::Utf8("bad".into())), Some(1007));
        assert_eq!(u16::from(Failure::text_frame("mqtt").code), 1003);
    }

    #[test]
    fn transport_endings_send_nothing() {
        assert!(matches!(
            classify(WsError::Protocol(
                ProtocolError::ResetWithoutClosingHandshake
            )),
            Ending::Eof
        ));
        assert!(matches!(classify(WsError::ConnectionClosed), Ending::Eof));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(
            classify(WsError::Io(reset)),
            Ending::Transport(e) if e.kind() == io::ErrorKind::ConnectionReset
        ));
    }

    #[test]
    fn peer_close_codes_other_than_normal_are_errors() {
        let frame = |code: u16| CloseFrame {
            code: code.into(),
            reason: "why".into(),
        };
        assert!(peer_close_error(None).is_none());
        assert!(peer_close_error(Some(&frame(1000))).is_none());
        assert!(peer_close_error(Some(&frame(1001))).is_none());
        let error = peer_close_error(Some(&frame(1009))).unwrap();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionAborted);
        assert!(error.to_string().contains("1009 (why)"), "{error}");
    }
}
