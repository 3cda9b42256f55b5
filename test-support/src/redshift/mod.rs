//! A Redshift stand-in for tests and benchmarks: a PostgreSQL-protocol endpoint on loopback
//! in front of the test PostgreSQL. Every statement goes to PostgreSQL as it is — LOCK,
//! temporary tables, MERGE, INSERTs run for real — except `COPY … FROM 's3://…' FORMAT AS
//! PARQUET`, which PostgreSQL cannot run: the stand-in runs it as Redshift does
//! ([`copy`]): it reads the manifest and files from the emulator's S3, applies Redshift's
//! columnar rules, and has PostgreSQL load what passes, in the client's own session and
//! transaction. A refusal comes back as Redshift's catch-all `XX000` error.
//!
//! `GETDATE()` is created in the database once, as Redshift has it.

pub mod copy;
pub mod ddl;
pub mod gate;
mod wire;

use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify, mpsc};

use copy::{CopyCommand, TargetColumn};
use wire::{Message, read_message, write_message};

/// A running stand-in; it stops when dropped.
#[derive(Debug)]
pub struct RedshiftStandIn {
    url: String,
    context: Arc<Context>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RedshiftStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RedshiftStandIn {
    /// Starts one in front of the test PostgreSQL, reading S3 through `s3`.
    pub async fn start(s3: aws_sdk_s3::Client) -> Self {
        let upstream = crate::postgres_url();
        install_functions(&upstream).await;
        let (address, rest) = upstream_address(&upstream);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in");
        let port = listener.local_addr().expect("address").port();
        let url = format!("postgres://{}127.0.0.1:{port}{rest}", user_part(&upstream));
        let files = std::env::temp_dir().join(format!("redshift-standin-{port}"));
        std::fs::create_dir_all(&files).expect("stand-in folder");
        let context = Arc::new(Context {
            s3,
            files,
            upstream: address,
            faults: std::sync::Mutex::default(),
            copies: std::sync::Mutex::default(),
            statements: std::sync::Mutex::default(),
            next_file: std::sync::atomic::AtomicU64::new(0),
        });
        let accepting = context.clone();
        let task = tokio::spawn(async move {
            let context = accepting;
            while let Ok((client, _)) = listener.accept().await {
                let context = context.clone();
                tokio::spawn(async move {
                    if let Err(err) = serve(client, context).await {
                        eprintln!("redshift stand-in: session ended: {err}");
                    }
                });
            }
        });
        Self { url, context, task }
    }

    /// Makes every COPY from S3 take at least `duration` (as reading S3 takes time).
    pub fn slow_copies(&self, duration: std::time::Duration) {
        self.context.timing().at_least = duration;
    }

    /// Every statement clients ran through the stand-in, in order.
    pub fn statements(&self) -> Vec<Statement> {
        self.context.log().clone()
    }

    /// When each COPY from S3 started and ended, in the order they ended.
    pub fn copy_spans(&self) -> Vec<(std::time::Instant, std::time::Instant)> {
        self.context.timing().spans.clone()
    }

    /// Makes the next COPY from S3 (of any session) fail as Redshift would with `message`
    /// and `detail` (`XX000`), loading nothing: S3 throttling, a serializable conflict, …
    pub fn fail_next_copy(&self, message: &str, detail: Option<&str>) {
        self.context
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back((message.to_owned(), detail.map(str::to_owned)));
    }

    /// The URL clients connect to (the test PostgreSQL's user and database).
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// What every session shares.
#[derive(Debug)]
struct Context {
    s3: aws_sdk_s3::Client,
    /// Where COPY data is written for PostgreSQL to read.
    files: std::path::PathBuf,
    upstream: String,
    /// Failures the next COPYs report instead of loading.
    faults: std::sync::Mutex<std::collections::VecDeque<(String, Option<String>)>>,
    /// How long each COPY takes at least (S3 latency), and when each ran.
    copies: std::sync::Mutex<CopyTiming>,
    /// Every statement clients ran, as sent.
    statements: std::sync::Mutex<Vec<Statement>>,
    /// Numbers the COPY data files of all sessions.
    next_file: std::sync::atomic::AtomicU64,
}

/// A statement a client ran: its SQL as sent, and its size with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub bytes: usize,
}

#[derive(Debug, Default)]
struct CopyTiming {
    at_least: std::time::Duration,
    spans: Vec<(std::time::Instant, std::time::Instant)>,
}

impl Context {
    fn timing(&self) -> std::sync::MutexGuard<'_, CopyTiming> {
        self.copies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Vec<Statement>> {
        self.statements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Redshift functions PostgreSQL lacks.
async fn install_functions(url: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    // Several tests start stand-ins at once: serialise the DDL.
    client
        .batch_execute(
            "BEGIN; SELECT pg_advisory_xact_lock(4242);
             CREATE OR REPLACE FUNCTION public.getdate() RETURNS timestamp
               LANGUAGE sql STABLE AS 'SELECT date_trunc(''second'', localtimestamp)::timestamp';
             COMMIT;",
        )
        .await
        .expect("create GETDATE()");
}

/// `host:port` of a `postgres://user@host:port/db` URL, and the `/db…` after it.
fn upstream_address(url: &str) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split_once('@').map_or(rest, |(_, rest)| rest);
    match rest.find('/') {
        Some(slash) => (rest[..slash].to_owned(), rest[slash..].to_owned()),
        None => (rest.to_owned(), String::new()),
    }
}

/// `user@` (or `user:password@`) of a URL, or nothing.
fn user_part(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split_once('@')
        .map(|(user, _)| format!("{user}@"))
        .unwrap_or_default()
}

/// The server's answers to a session, and whether the stand-in takes them for itself.
#[derive(Debug, Default)]
struct Flow {
    /// `ReadyForQuery` messages the client waits for, and those it got.
    expected: u64,
    answered: u64,
    /// The session is inside a transaction block, as the last `ReadyForQuery` said.
    in_transaction: bool,
    divert: Option<mpsc::UnboundedSender<Message>>,
}

#[derive(Debug, Default)]
struct Session {
    flow: Mutex<Flow>,
    idle: Notify,
}

async fn serve(client: TcpStream, context: Arc<Context>) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut server = TcpStream::connect(&context.upstream).await?;
    server.set_nodelay(true)?;
    let mut client = BufReader::new(client);
    wire::start_up(&mut client, &mut server).await?;
    let (client_read, client_write) = tokio::io::split(client);
    let (server_read, server_write) = server.into_split();
    let session = Arc::new(Session::default());
    // The start-up ends with one ReadyForQuery.
    session.flow.lock().await.expected = 1;
    let answers = tokio::spawn(pass_answers(server_read, client_write, session.clone()));
    let mut requests = Requests {
        client: client_read,
        server: server_write,
        session,
        context,
        data_file: None,
        prepared: std::collections::HashMap::new(),
    };
    let result = requests.pass().await;
    answers.abort();
    requests.remove_data_file();
    result
}

/// Server to client: every message, unless the stand-in diverted them to itself.
async fn pass_answers(
    server: tokio::net::tcp::OwnedReadHalf,
    client: tokio::io::WriteHalf<BufReader<TcpStream>>,
    session: Arc<Session>,
) -> std::io::Result<()> {
    let mut server = BufReader::new(server);
    let mut client = tokio::io::BufWriter::new(client);
    while let Some(message) = read_message(&mut server).await? {
        let mut flow = session.flow.lock().await;
        if let Some(divert) = &flow.divert {
            let _ = divert.send(message);
            continue;
        }
        write_message(&mut client, &message).await?;
        if message.tag == b'Z' {
            client.flush().await?;
            flow.answered += 1;
            flow.in_transaction = message.body.first().is_some_and(|status| *status != b'I');
            session.idle.notify_waiters();
        } else if server_buffer_empty(&server) {
            client.flush().await?;
        }
    }
    Ok(())
}

fn server_buffer_empty(reader: &BufReader<tokio::net::tcp::OwnedReadHalf>) -> bool {
    reader.buffer().is_empty()
}

/// Client to server, with Redshift's COPY from S3 run by the stand-in.
struct Requests {
    client: tokio::io::ReadHalf<BufReader<TcpStream>>,
    server: tokio::net::tcp::OwnedWriteHalf,
    session: Arc<Session>,
    context: Arc<Context>,
    /// The data file of this session's last COPY (PostgreSQL reads it while it runs).
    data_file: Option<std::path::PathBuf>,
    /// The SQL of this session's prepared statements, by name.
    prepared: std::collections::HashMap<String, String>,
}

impl Requests {
    async fn pass(&mut self) -> std::io::Result<()> {
        while let Some(message) = read_message(&mut self.client).await? {
            self.log(&message);
            let message = self.as_redshift_runs(message).await;
            if matches!(message.tag, b'Q' | b'S') {
                self.session.flow.lock().await.expected += 1;
            }
            write_message(&mut self.server, &message).await?;
            if message.tag == b'X' {
                break;
            }
        }
        Ok(())
    }

    fn remove_data_file(&mut self) {
        if let Some(path) = self.data_file.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Records what a client runs: a simple query, or a prepared statement when bound.
    fn log(&mut self, message: &Message) {
        let statement = match (message.tag, message.sql()) {
            (b'Q', Some((_, sql))) => Statement {
                sql: sql.to_owned(),
                bytes: sql.len(),
            },
            (b'P', Some((_, sql))) => {
                let name = message.first_string();
                self.prepared.insert(name, sql.to_owned());
                return;
            }
            (b'B', _) => {
                // Bind: portal name, then the statement's.
                let name = message.second_string();
                let sql = self.prepared.get(&name).cloned().unwrap_or_default();
                Statement {
                    bytes: sql.len() + message.body.len(),
                    sql,
                }
            }
            _ => return,
        };
        self.context.log().push(statement);
    }

    /// The message PostgreSQL gets: as sent, a COPY from S3 run as Redshift runs it, or an
    /// error for SQL Redshift would refuse.
    async fn as_redshift_runs(&mut self, message: Message) -> Message {
        let Some((_, sql)) = message.sql() else {
            return message;
        };
        if let Some(command) = copy::parse(sql) {
            let sql = self.run_copy(command).await;
            return message.with_sql(&sql);
        }
        if gate::alters_column_type(sql)
            && (gate::opens_transaction(sql) || self.session.flow.lock().await.in_transaction)
        {
            return message.with_sql(&raise_with(
                "25001",
                "ALTER TABLE ALTER COLUMN cannot run inside a transaction block",
                None,
            ));
        }
        let refused = gate::violations(sql);
        if !refused.is_empty() {
            let reason = format!("syntax error (Redshift): {}", refused.join("; "));
            return message.with_sql(&raise_with("42601", &reason, None));
        }
        match ddl::to_postgres(sql) {
            Ok(postgres) if postgres == sql => message,
            Ok(postgres) => message.with_sql(&postgres),
            Err(reason) => message.with_sql(&raise_with("42601", &reason, None)),
        }
    }

    /// The statement PostgreSQL runs for a Redshift COPY: its own COPY of what passed
    /// Redshift's rules, or an error with Redshift's reason.
    async fn run_copy(&mut self, command: Result<CopyCommand, String>) -> String {
        let fault = self
            .context
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front();
        if let Some((message, detail)) = fault {
            return raise(&message, detail.as_deref());
        }
        let started = std::time::Instant::now();
        let outcome = match command {
            Ok(command) => self.load(&command).await,
            Err(reason) => Err(reason),
        };
        let at_least = self.context.timing().at_least;
        tokio::time::sleep(at_least.saturating_sub(started.elapsed())).await;
        self.context
            .timing()
            .spans
            .push((started, std::time::Instant::now()));
        match outcome {
            Ok(sql) => sql,
            Err(reason) => raise(&reason, None),
        }
    }

    async fn load(&mut self, command: &CopyCommand) -> Result<String, String> {
        let columns = self.target_columns(&command.table).await?;
        let columns = match &command.columns {
            Some(list) => pick_columns(&columns, list)?,
            None => columns,
        };
        self.remove_data_file();
        let number = self
            .context
            .next_file
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .context
            .files
            .join(format!("copy-{}-{number}.csv", std::process::id()));
        self.data_file = Some(path.clone());
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&path).map_err(|err| format!("stand-in file: {err}"))?,
        );
        for (url, length) in self.files(command).await? {
            let bytes = self.fetch(&url).await?;
            if let Some(length) = length
                && length != bytes.len() as u64
            {
                return Err(format!(
                    "Manifest content_length {length} of {url} does not match the object's {} bytes",
                    bytes.len()
                ));
            }
            copy::append_parquet(&url, bytes, &columns, &mut out)?;
        }
        std::io::Write::flush(&mut out).map_err(|err| format!("stand-in file: {err}"))?;
        let list = command.columns.clone().unwrap_or_default();
        Ok(format!(
            "COPY {} {list} FROM {} WITH (FORMAT csv)",
            command.table,
            literal(&path.display().to_string())
        ))
    }

    /// The files a COPY reads: the manifest's entries, or every object under the prefix.
    async fn files(&self, command: &CopyCommand) -> Result<Vec<(String, Option<u64>)>, String> {
        if command.manifest {
            let manifest = self.fetch(&command.from).await?;
            return copy::manifest_entries(&manifest);
        }
        let (bucket, prefix) = copy::split_url(&command.from)?;
        let listed = self
            .context
            .s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(&prefix)
            .send()
            .await
            .map_err(|err| format!("S3ServiceException: listing {}: {err:?}", command.from))?;
        let files: Vec<(String, Option<u64>)> = listed
            .contents()
            .iter()
            .filter_map(|object| object.key())
            .map(|key| (format!("s3://{bucket}/{key}"), None))
            .collect();
        if files.is_empty() {
            return Err(format!("The specified S3 prefix '{prefix}' does not exist"));
        }
        Ok(files)
    }

    async fn fetch(&self, url: &str) -> Result<bytes::Bytes, String> {
        let (bucket, key) = copy::split_url(url)?;
        let object = self
            .context
            .s3
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .map_err(|err| format!("S3ServiceException: cannot read {url}: {err:?}"))?;
        let body = object
            .body
            .collect()
            .await
            .map_err(|err| format!("S3ServiceException: reading {url}: {err}"))?;
        Ok(body.into_bytes())
    }

    /// The table's columns in order, asked of PostgreSQL in the client's session (a
    /// temporary table is visible only there).
    async fn target_columns(&mut self, table: &str) -> Result<Vec<TargetColumn>, String> {
        let sql = format!(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
             WHERE attrelid = to_regclass({}) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            literal(table)
        );
        let rows = self.side_query(&sql).await?;
        if rows.is_empty() {
            return Err(format!("relation {table} does not exist"));
        }
        Ok(rows
            .into_iter()
            .map(|row| TargetColumn {
                name: row.first().cloned().flatten().unwrap_or_default(),
                sql_type: row.get(1).cloned().flatten().unwrap_or_default(),
                not_null: row.get(2).cloned().flatten().as_deref() == Some("t"),
            })
            .collect())
    }

    /// Runs a query of the stand-in's own in the client's session, once the server has
    /// answered everything the client sent; returns its rows.
    async fn side_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let (divert, mut answers) = mpsc::unbounded_channel();
        loop {
            let idle = self.session.idle.notified();
            let mut flow = self.session.flow.lock().await;
            if flow.answered == flow.expected {
                flow.divert = Some(divert);
                break;
            }
            drop(flow);
            idle.await;
        }
        let sent = write_message(&mut self.server, &Message::query(sql)).await;
        let mut rows = Vec::new();
        let mut error = sent.err().map(|err| err.to_string());
        while error.is_none() {
            match answers.recv().await {
                Some(message) if message.tag == b'D' => rows.push(message.data_row()),
                Some(message) if message.tag == b'E' => error = Some(message.error_message()),
                Some(message) if message.tag == b'Z' => break,
                Some(_) => {}
                None => error = Some("the server closed the session".to_owned()),
            }
        }
        if error.is_some() {
            // Drain up to ReadyForQuery so the client sees the server as it was.
            while let Some(message) = answers.recv().await {
                if message.tag == b'Z' {
                    break;
                }
            }
        }
        self.session.flow.lock().await.divert = None;
        match error {
            Some(error) => Err(error),
            None => Ok(rows),
        }
    }
}

/// The columns a COPY's column list names, in its order.
fn pick_columns(columns: &[TargetColumn], list: &str) -> Result<Vec<TargetColumn>, String> {
    list.trim_matches(|c| c == '(' || c == ')' || c == ' ')
        .split(',')
        .map(|name| {
            let name = name.trim().trim_matches('"');
            columns
                .iter()
                .find(|c| c.name == name)
                .cloned()
                .ok_or_else(|| format!("column \"{name}\" does not exist"))
        })
        .collect()
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A statement that fails as Redshift's COPY would: SQLSTATE XX000, the reason, a detail.
fn raise(reason: &str, detail: Option<&str>) -> String {
    raise_with("XX000", reason, detail)
}

/// A statement that fails with `code`, `reason` and `detail`.
fn raise_with(code: &str, reason: &str, detail: Option<&str>) -> String {
    let text = |text: &str| literal(&text.replace("$standin$", ""));
    let detail = detail
        .map(|detail| format!(", DETAIL = {}", text(detail)))
        .unwrap_or_default();
    format!(
        "DO $standin$ BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = {}{detail}; END $standin$",
        text(reason)
    )
}
