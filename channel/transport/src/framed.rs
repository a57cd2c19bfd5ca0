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
    reader: FrameReader,
    writer: FrameWriter,
}

/// The reading half of a [`FramedStream`].
pub struct FrameReader {
    recv: RecvStream,
    max_frame: usize,
}

/// The writing half of a [`FramedStream`].
pub struct FrameWriter {
    send: SendStream,
    max_frame: usize,
}

impl FramedStream {
    pub fn new(send: SendStream, recv: RecvStream, max_frame: usize) -> FramedStream {
        FramedStream {
            reader: FrameReader { recv, max_frame },
            writer: FrameWriter { send, max_frame },
        }
    }

    /// Splits the stream so that reading and writing run in different tasks: a read must
    /// never be cancelled half-way (say, by a `select!` that picked a write), or the framing
    /// is lost.
    pub fn split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }

    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        self.writer.write_frame(frame).await
    }

    pub async fn write_prefixed(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        self.writer.write_prefixed(frame).await
    }

    pub async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        self.reader.read_frame().await
    }

    pub fn finish(&mut self) {
        self.writer.finish();
    }
}

impl FrameWriter {
    /// Writes one frame: its length, then its bytes.
    pub async fn write_frame(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        if frame.len() > self.max_frame {
            return Err(FrameError::Oversized(frame.len(), self.max_frame));
        }
        let mut out = Vec::with_capacity(frame.len() + 4);
        out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        out.extend_from_slice(frame);
        self.write_all(&out).await
    }

    /// Writes bytes that already carry their own 4-byte big-endian length prefix (a
    /// [`gridchan_channel::Message`] frame), checking that the prefix is right.
    pub async fn write_prefixed(&mut self, frame: &[u8]) -> Result<(), FrameError> {
        self.check_prefixed(frame)?;
        self.write_all(frame).await
    }

    /// Writes several prefixed frames in one go (one write to the stream, so QUIC packs them
    /// into as few packets as it can).
    pub async fn write_prefixed_many(&mut self, frames: &[Vec<u8>]) -> Result<(), FrameError> {
        let mut out = Vec::with_capacity(frames.iter().map(Vec::len).sum());
        for frame in frames {
            self.check_prefixed(frame)?;
            out.extend_from_slice(frame);
        }
        self.write_all(&out).await
    }

    fn check_prefixed(&self, frame: &[u8]) -> Result<(), FrameError> {
        let body = frame.get(4..).ok_or(FrameError::Truncated)?;
        if frame[..4] != (body.len() as u32).to_be_bytes() {
            return Err(FrameError::Truncated);
        }
        if body.len() > self.max_frame {
            return Err(FrameError::Oversized(body.len(), self.max_frame));
        }
        Ok(())
    }

    /// Writes bytes as they are, frame or not: tests of peers that misbehave (a frame that
    /// stops half-way) use it; nothing else should.
    #[doc(hidden)]
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.write_all(bytes).await
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.send
            .write_all(bytes)
            .await
            .map_err(|e| FrameError::Stream(e.to_string()))
    }

    /// Finishes our side of the stream.
    pub fn finish(&mut self) {
        let _ = self.send.finish();
    }
}

impl FrameReader {
    /// Reads one frame; `Ok(None)` when the peer finished the stream cleanly between frames.
    /// The length is checked against the limit before the body is read.
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
}
