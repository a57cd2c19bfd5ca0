//! The little HTTP the daemon serves (its metrics, the household's page): a request's head,
//! bounded in size and time. Nothing else of HTTP is needed: every answer closes the connection.

use std::time::Duration;

use tokio::io::AsyncReadExt;

/// An HTTP request's head (up to the blank line), at most `max` bytes, within 5 s; `None` if
/// the client sends less, more, or nothing in time.
pub async fn read_head(stream: &mut tokio::net::TcpStream, max: usize) -> Option<String> {
    let mut buf = vec![0u8; max];
    let mut len = 0;
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while len < buf.len() {
            let n = stream.read(&mut buf[len..]).await.ok()?;
            if n == 0 {
                return None;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                return Some(());
            }
        }
        None
    })
    .await;
    matches!(read, Ok(Some(()))).then(|| String::from_utf8_lossy(&buf[..len]).to_string())
}
