//! The PostgreSQL wire protocol as far as the stand-in needs it: framing of messages in
//! both directions, and the SQL text of simple queries (`Q`) and parses (`P`).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The startup codes that ask for an encrypted session; the stand-in answers `N` (plain).
const SSL_REQUEST: u32 = 80_877_103;
const GSS_REQUEST: u32 = 80_877_104;

/// One protocol message after start-up: its type byte and body (without the length).
#[derive(Debug, Clone)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    pub fn new(tag: u8, body: Vec<u8>) -> Self {
        Self { tag, body }
    }

    /// The message as it travels: type, length (itself included), body.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.body.len() + 5);
        bytes.push(self.tag);
        bytes.extend_from_slice(&(self.body.len() as u32 + 4).to_be_bytes());
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// A simple query.
    pub fn query(sql: &str) -> Self {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        Self::new(b'Q', body)
    }

    /// The SQL of a simple query or a parse, with where it sits in the body.
    pub fn sql(&self) -> Option<(usize, &str)> {
        let start = match self.tag {
            b'Q' => 0,
            // Parse: statement name, then the query.
            b'P' => self.body.iter().position(|&b| b == 0)? + 1,
            _ => return None,
        };
        let end = start + self.body[start..].iter().position(|&b| b == 0)?;
        let sql = std::str::from_utf8(&self.body[start..end]).ok()?;
        Some((start, sql))
    }

    /// The same message with its SQL replaced.
    pub fn with_sql(&self, sql: &str) -> Self {
        let Some((start, old)) = self.sql() else {
            return self.clone();
        };
        let mut body = self.body[..start].to_vec();
        body.extend_from_slice(sql.as_bytes());
        body.extend_from_slice(&self.body[start + old.len()..]);
        Self::new(self.tag, body)
    }

    /// The first NUL-terminated string of the body (a Parse's statement name).
    pub fn first_string(&self) -> String {
        self.nth_string(0)
    }

    /// The second NUL-terminated string of the body (a Bind's statement name).
    pub fn second_string(&self) -> String {
        self.nth_string(1)
    }

    fn nth_string(&self, n: usize) -> String {
        self.body
            .split(|&b| b == 0)
            .nth(n)
            .map(|text| String::from_utf8_lossy(text).into_owned())
            .unwrap_or_default()
    }

    /// The fields of a `DataRow` as text (`None` for NULL).
    pub fn data_row(&self) -> Vec<Option<String>> {
        let mut fields = Vec::new();
        let mut at = 2;
        while at + 4 <= self.body.len() {
            let len = i32::from_be_bytes([
                self.body[at],
                self.body[at + 1],
                self.body[at + 2],
                self.body[at + 3],
            ]);
            at += 4;
            if len < 0 {
                fields.push(None);
                continue;
            }
            let end = (at + len as usize).min(self.body.len());
            fields.push(Some(
                String::from_utf8_lossy(&self.body[at..end]).into_owned(),
            ));
            at = end;
        }
        fields
    }

    /// The message field of an `ErrorResponse`.
    pub fn error_message(&self) -> String {
        self.body
            .split(|&b| b == 0)
            .find(|field| field.first() == Some(&b'M'))
            .map(|field| String::from_utf8_lossy(&field[1..]).into_owned())
            .unwrap_or_else(|| "unknown error".to_owned())
    }
}

/// Reads one message, `None` at the end of the stream.
pub async fn read_message(
    reader: &mut (impl AsyncRead + Unpin),
) -> std::io::Result<Option<Message>> {
    let mut header = [0u8; 5];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(err) => return Err(err),
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    reader.read_exact(&mut body).await?;
    Ok(Some(Message::new(header[0], body)))
}

pub async fn write_message(
    writer: &mut (impl AsyncWrite + Unpin),
    message: &Message,
) -> std::io::Result<()> {
    writer.write_all(&message.encode()).await
}

/// Passes the client's start-up message to the server, answering requests for an
/// encrypted session with `N` first.
pub async fn start_up(
    client: &mut (impl AsyncRead + AsyncWrite + Unpin),
    server: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    loop {
        let len = client.read_u32().await? as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        client.read_exact(&mut body).await?;
        let code = body
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if matches!(code, Some(SSL_REQUEST | GSS_REQUEST)) {
            client.write_all(b"N").await?;
            continue;
        }
        server.write_all(&(len as u32).to_be_bytes()).await?;
        server.write_all(&body).await?;
        return Ok(());
    }
}
