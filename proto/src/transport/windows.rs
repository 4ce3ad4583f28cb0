//! HTTP/2 flow control on the receiving end of a client's streams. h2's defaults (64 KiB
//! windows, 16 KiB frames) make a 1 MiB weights chunk wait on about 16 window updates and
//! cross in 64 frames; larger windows let a whole chunk be in flight at once
//! (`oxrl bench weights` measures both).

/// A client's receive windows and largest frame, in bytes (`None`: h2's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Bytes one stream may have in flight towards this client.
    pub stream: Option<u32>,
    /// Bytes all streams of the connection may have in flight together.
    pub connection: Option<u32>,
    /// The largest DATA frame this client accepts.
    pub max_frame: Option<u32>,
}

impl Windows {
    /// h2's own defaults: 64 KiB windows, 16 KiB frames.
    pub const H2_DEFAULTS: Windows = Windows {
        stream: None,
        connection: None,
        max_frame: None,
    };
}

impl Default for Windows {
    /// Room for several weights chunks ([`crate::WEIGHTS_CHUNK_BYTES`]) in flight, in frames
    /// of 1 MiB; a client that reads slowly still holds at most 16 MiB per connection.
    fn default() -> Self {
        Windows {
            stream: Some(8 << 20),
            connection: Some(16 << 20),
            max_frame: Some(1 << 20),
        }
    }
}
