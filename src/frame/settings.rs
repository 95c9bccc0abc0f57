//! SETTINGS: what each side announces about itself when a connection opens.

use bytes::{BufMut, BytesMut};

use super::{put_header, Flags, FrameType};

/// Setting identifiers (u16 on the wire). Unknown identifiers are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum SettingId {
    /// Most streams the sender lets its peer open at once.
    MaxConcurrentStreams = 1,
    /// Initial per-stream receive window (bytes of DATA payload).
    InitialStreamWindow = 2,
    /// Initial connection receive window (bytes of DATA payload).
    InitialConnectionWindow = 3,
    /// Largest message payload the sender accepts.
    MaxMessageSize = 4,
    /// Largest metadata block the sender accepts.
    MaxMetadataSize = 5,
}

/// The settings a peer announced; `None` means "not sent" (use the default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// See [`SettingId::MaxConcurrentStreams`].
    pub max_concurrent_streams: Option<u32>,
    /// See [`SettingId::InitialStreamWindow`].
    pub initial_stream_window: Option<u32>,
    /// See [`SettingId::InitialConnectionWindow`].
    pub initial_connection_window: Option<u32>,
    /// See [`SettingId::MaxMessageSize`].
    pub max_message_size: Option<u32>,
    /// See [`SettingId::MaxMetadataSize`].
    pub max_metadata_size: Option<u32>,
}

impl Settings {
    fn pairs(&self) -> impl Iterator<Item = (SettingId, u32)> {
        [
            (SettingId::MaxConcurrentStreams, self.max_concurrent_streams),
            (SettingId::InitialStreamWindow, self.initial_stream_window),
            (
                SettingId::InitialConnectionWindow,
                self.initial_connection_window,
            ),
            (SettingId::MaxMessageSize, self.max_message_size),
            (SettingId::MaxMetadataSize, self.max_metadata_size),
        ]
        .into_iter()
        .filter_map(|(id, v)| v.map(|v| (id, v)))
    }

    /// Writes a whole SETTINGS frame.
    pub fn encode(&self, dst: &mut BytesMut) {
        let n = self.pairs().count();
        put_header(dst, FrameType::Settings, Flags::NONE, 0, 0, n * 6);
        for (id, v) in self.pairs() {
            dst.put_u16(id as u16);
            dst.put_u32(v);
        }
    }

    /// Parses a SETTINGS payload: a sequence of `(u16 id, u32 value)`.
    pub fn parse(payload: &[u8]) -> Option<Settings> {
        if payload.len() % 6 != 0 {
            return None;
        }
        let mut s = Settings::default();
        for pair in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([pair[0], pair[1]]);
            let v = u32::from_be_bytes([pair[2], pair[3], pair[4], pair[5]]);
            match id {
                1 => s.max_concurrent_streams = Some(v),
                2 => s.initial_stream_window = Some(v),
                3 => s.initial_connection_window = Some(v),
                4 => s.max_message_size = Some(v),
                5 => s.max_metadata_size = Some(v),
                _ => {}
            }
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::HEADER_LEN;

    #[test]
    fn settings_round_trip_and_ignore_unknown_ids() {
        let s = Settings {
            max_concurrent_streams: Some(100),
            max_message_size: Some(1 << 20),
            ..Settings::default()
        };
        let mut b = BytesMut::new();
        s.encode(&mut b);
        let mut payload = b[HEADER_LEN..].to_vec();
        payload.extend_from_slice(&[0x77, 0x77, 0, 0, 0, 1]);
        assert_eq!(Settings::parse(&payload), Some(s));
        assert_eq!(Settings::parse(&[1, 2, 3]), None);
    }
}
