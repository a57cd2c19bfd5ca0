//! Length-prefixed frames on a QUIC stream: `u32` big-endian length, then that many bytes.

use quinn::{RecvStream, SendStream};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced a frame above the limit. The stream is unusable.
    #[error("frame of {0} bytes exceeds the {1}-byte limit")]
    Oversized(usize, usize),
    /// The stream ended in the middle of a frame.
    #[error("stream ended mid-frame")]
    Truncated,
    /// The connection or stream failed.
    #[error("stream failed: {0}")]
    Stream(String),
}

/// A bidirectional stream of frames.
pub struct FramedStream {
    send: SendStream,
    recv: RecvStream,
    max_frame: usize,
}

impl FramedStream {
    pub fn new(send: SendStream, recv: RecvStream, max_frame: usize) -> FramedStream {
        FramedStream {
            send,
            recv,
            max_frame,
        }
    }

    /// Writes one frame: its length, then its bytes.
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        if frame.len() > self.max_frame {
            return Err(FrameError::Oversized(frame.len(), self.max_frame));
        }
        let len = (frame.len() as u32).to_be_bytes();
        self.send
            .write_all(&len)
            .await
            .map_err(|e| FrameError::Stream(e.to_string()))?;
        self.send
            .write_all(frame)
            .await
            .map_err(|e| FrameError::Stream(e.to_string()))
    }

    /// Writes bytes that already carry their own 4-byte big-endian length prefix (a
    /// [`gridchan_channel::Message`] frame), checking that the prefix is right.
    pub async fn write_prefixed(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        let body = frame.get(4..).ok_or(FrameError::Truncated)?;
        if frame[..4] != (body.len() as u32).to_be_bytes() {
            return Err(FrameError::Truncated);
        }
        if body.len() > self.max_frame {
            return Err(FrameError::Oversized(body.len(), self.max_frame));
        }
        self.send
            .write_all(frame)
            .await
            .map_err(|e| FrameError::Stream(e.to_string()))
    }

    /// Reads one frame; `Ok(None)` when the peer finished the stream cleanly between frames.
    pub async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let mut len = [0u8; 4];
        match self.recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(FrameError::Truncated),
            Err(quinn::ReadExactError::ReadError(e)) => {
                return Err(FrameError::Stream(e.to_string()))
            }
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > self.max_frame {
            return Err(FrameError::Oversized(len, self.max_frame));
        }
        let mut buf = vec![0u8; len];
        self.recv.read_exact(&mut buf).await.map_err(|e| match e {
            quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
            quinn::ReadExactError::ReadError(e) => FrameError::Stream(e.to_string()),
        })?;
        Ok(Some(buf))
    }

    /// Finishes our side of the stream.
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }
}
