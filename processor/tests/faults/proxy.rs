//! A fault-injecting TCP proxy on loopback, between the platform and the AWS emulator.
//!
//! Each accepted connection gets one fate from a seeded generator: passed through, slowed,
//! answered with a throttling or a server error without reaching the emulator, or stalled
//! until the client gives up. Every connection that passes also has a budget of response
//! bytes after which the proxy cuts it, often in the middle of a response, so kept-alive
//! connections meet faults for the whole run and not only when they open.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The share of connections given each fault; the rest pass (until their byte budget).
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    pub slow: f64,
    pub throttle: f64,
    pub server_error: f64,
    pub stall: f64,
    /// Delay before each chunk forwarded on a slowed connection.
    pub slow_delay: Duration,
    /// How long a stalled connection is held before the proxy closes it.
    pub stall_for: Duration,
    /// Response bytes a connection may carry before it is cut: drawn from this range.
    pub cut_after_bytes: (usize, usize),
}

/// What the proxy did, for the test's report and its checks that faults happened.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub connections: AtomicU64,
    pub cut: AtomicU64,
    pub slowed: AtomicU64,
    pub throttled: AtomicU64,
    pub server_errors: AtomicU64,
    pub stalled: AtomicU64,
}

impl FaultCounts {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> String {
        format!(
            "connections={} cut={} slowed={} throttled={} server_errors={} stalled={}",
            Self::get(&self.connections),
            Self::get(&self.cut),
            Self::get(&self.slowed),
            Self::get(&self.throttled),
            Self::get(&self.server_errors),
            Self::get(&self.stalled),
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Fate {
    Pass,
    Slow,
    Throttle,
    ServerError,
    Stall,
}

pub struct FaultProxy {
    pub address: SocketAddr,
    pub counts: Arc<FaultCounts>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr, plan: FaultPlan, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let counts = Arc::new(FaultCounts::default());
        let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
        let accept = {
            let counts = Arc::clone(&counts);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    counts.connections.fetch_add(1, Ordering::Relaxed);
                    let (fate, budget) = {
                        let mut rng = rng.lock().expect("rng lock");
                        (
                            draw_fate(&mut *rng, &plan),
                            rng.random_range(plan.cut_after_bytes.0..=plan.cut_after_bytes.1),
                        )
                    };
                    let counts = Arc::clone(&counts);
                    tokio::spawn(async move {
                        serve(client, upstream, fate, budget, &plan, &counts).await;
                    });
                }
            })
        };
        Self {
            address,
            counts,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn draw_fate(rng: &mut impl Rng, plan: &FaultPlan) -> Fate {
    let draw: f64 = rng.random();
    let mut edge = plan.slow;
    if draw < edge {
        return Fate::Slow;
    }
    edge += plan.throttle;
    if draw < edge {
        return Fate::Throttle;
    }
    edge += plan.server_error;
    if draw < edge {
        return Fate::ServerError;
    }
    edge += plan.stall;
    if draw < edge {
        return Fate::Stall;
    }
    Fate::Pass
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    fate: Fate,
    budget: usize,
    plan: &FaultPlan,
    counts: &FaultCounts,
) {
    match fate {
        Fate::Throttle | Fate::ServerError => {
            let Some(head) = read_request_head(&mut client).await else {
                return;
            };
            let response = error_response(&head, matches!(fate, Fate::Throttle));
            let counter = if matches!(fate, Fate::Throttle) {
                &counts.throttled
            } else {
                &counts.server_errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let _ = client.write_all(response.as_bytes()).await;
            let _ = client.shutdown().await;
        }
        Fate::Stall => {
            if read_request_head(&mut client).await.is_some() {
                counts.stalled.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(plan.stall_for).await;
            }
        }
        Fate::Pass | Fate::Slow => {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let delay = match fate {
                Fate::Slow => {
                    counts.slowed.fetch_add(1, Ordering::Relaxed);
                    Some(plan.slow_delay)
                }
                _ => None,
            };
            let (mut client_read, mut client_write) = client.into_split();
            let (mut server_read, mut server_write) = server.into_split();
            let requests = async {
                let mut buffer = vec![0u8; 16 * 1024];
                loop {
                    let n = match client_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            };
            let responses = async {
                let mut buffer = vec![0u8; 16 * 1024];
                let mut left = budget;
                loop {
                    let n = match server_read.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    if n >= left {
                        // The budget is spent: forward part of this chunk and cut.
                        let _ = client_write.write_all(&buffer[..left]).await;
                        counts.cut.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    left -= n;
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        return;
                    }
                }
            };
            // Whichever side ends first closes both.
            tokio::select! {
                _ = requests => {}
                _ = responses => {}
            }
        }
    }
}

/// Reads until the end of the request's header block (the body is not needed).
async fn read_request_head(client: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match client.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).to_lowercase())
}

/// The answer AWS gives when it throttles or fails: SQS speaks JSON, S3 XML.
fn error_response(head: &str, throttle: bool) -> String {
    let sqs = head.contains("x-amz-target: amazonsqs.");
    let (status, content_type, extra, body) = match (sqs, throttle) {
        (true, true) => (
            "400 Bad Request",
            "application/x-amz-json-1.0",
            "x-amzn-query-error: RequestThrottled;Sender\r\n",
            r#"{"__type":"com.amazonaws.sqs#RequestThrottled","message":"Rate exceeded (fault proxy)"}"#,
        ),
        (true, false) => (
            "500 Internal Server Error",
            "application/x-amz-json-1.0",
            "",
            r#"{"__type":"com.amazonaws.sqs#InternalError","message":"We encountered an internal error (fault proxy)"}"#,
        ),
        (false, true) => (
            "503 Slow Down",
            "application/xml",
            "",
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate (fault proxy).</Message></Error>",
        ),
        (false, false) => (
            "500 Internal Server Error",
            "application/xml",
            "",
            "<Error><Code>InternalError</Code><Message>We encountered an internal error (fault proxy).</Message></Error>",
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
