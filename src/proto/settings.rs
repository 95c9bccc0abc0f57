//! What the peer announced in its SETTINGS frames, applied with one rule for
//! both roles (docs/PROTOCOL.md §3).

use crate::frame::{self, GoawayCode, Settings, MAX_WINDOW};

use super::error::ConnError;

/// The peer's limits as they are in force now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerSettings {
    /// Largest message payload the peer accepts.
    pub(crate) max_message: usize,
    /// Largest metadata block the peer accepts (at least 1 KiB).
    pub(crate) max_metadata: usize,
    /// Most streams the peer lets us open at once.
    pub(crate) max_streams: usize,
    /// The initial send window of streams opened from now on.
    pub(crate) stream_window: u32,
    /// The connection's initial send window (from the first SETTINGS).
    pub(crate) connection_window: u32,
    /// True once a SETTINGS frame was applied.
    pub(crate) received: bool,
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            max_message: frame::DEFAULT_MAX_MESSAGE,
            max_metadata: frame::DEFAULT_MAX_METADATA,
            max_streams: usize::MAX,
            stream_window: frame::DEFAULT_STREAM_WINDOW,
            connection_window: frame::DEFAULT_CONNECTION_WINDOW,
            received: false,
        }
    }
}

impl PeerSettings {
    /// Applies a SETTINGS frame. The ids it carries replace the values in
    /// force; absent ids keep theirs (the first frame's absent ids keep the
    /// protocol defaults). INITIAL_STREAM_WINDOW applies to streams opened
    /// afterwards; INITIAL_CONNECTION_WINDOW counts only in the first frame
    /// (after it the window moves with WINDOW_UPDATE alone). A window above
    /// 2^31 - 1 is a FLOW_CONTROL_ERROR. Returns true for the first frame.
    pub(crate) fn apply(&mut self, s: &Settings) -> Result<bool, ConnError> {
        for (name, v) in [
            ("INITIAL_STREAM_WINDOW", s.initial_stream_window),
            ("INITIAL_CONNECTION_WINDOW", s.initial_connection_window),
        ] {
            if let Some(v) = v {
                if i64::from(v) > MAX_WINDOW {
                    return Err(ConnError::goaway(
                        GoawayCode::FlowControlError,
                        format!("SETTINGS {name} of {v} is above 2^31-1"),
                    ));
                }
            }
        }
        let first = !self.received;
        self.received = true;
        if let Some(v) = s.max_message_size {
            self.max_message = v as usize;
        }
        if let Some(v) = s.max_metadata_size {
            self.max_metadata = frame::metadata_limit(v as usize);
        }
        if let Some(v) = s.max_concurrent_streams {
            self.max_streams = v as usize;
        }
        if let Some(v) = s.initial_stream_window {
            self.stream_window = v;
        }
        if let (true, Some(v)) = (first, s.initial_connection_window) {
            self.connection_window = v;
        }
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_ids_keep_their_values_and_the_connection_window_counts_once() {
        let mut p = PeerSettings::default();
        let first = Settings {
            max_concurrent_streams: Some(8),
            max_message_size: Some(100),
            initial_connection_window: Some(1000),
            ..Settings::default()
        };
        assert_eq!(p.apply(&first).ok(), Some(true));
        let again = Settings {
            max_metadata_size: Some(5000),
            initial_connection_window: Some(9),
            ..Settings::default()
        };
        assert_eq!(p.apply(&again).ok(), Some(false));
        assert_eq!(p.max_streams, 8, "absent: kept");
        assert_eq!(p.max_message, 100, "absent: kept");
        assert_eq!(p.max_metadata, 5000);
        assert_eq!(p.connection_window, 1000, "only the first frame sets it");
        assert_eq!(p.stream_window, frame::DEFAULT_STREAM_WINDOW);
    }

    #[test]
    fn windows_above_the_maximum_are_flow_control_errors() {
        let mut p = PeerSettings::default();
        let s = Settings {
            initial_stream_window: Some(1 << 31),
            ..Settings::default()
        };
        match p.apply(&s) {
            Err(ConnError::Goaway { code, .. }) => assert_eq!(code, GoawayCode::FlowControlError),
            other => panic!("{other:?}"),
        }
        assert!(!p.received);
    }

    #[test]
    fn small_metadata_limits_are_raised_to_the_floor() {
        let mut p = PeerSettings::default();
        p.apply(&Settings {
            max_metadata_size: Some(10),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(p.max_metadata, frame::MIN_MAX_METADATA);
    }
}
