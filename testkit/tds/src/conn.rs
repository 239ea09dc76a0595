//! One client connection: PRELOGIN and encryption negotiation, the TLS handshake,
//! LOGIN7, then the request loop (batches, RPCs, attentions, transactions).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::fixture::{encode_result_set, normalize_sql, AnswerBody, ServerError};
use crate::requests::{
    parse_login7, parse_prelogin, parse_rpc, parse_sql_batch, parse_tm, prelogin_response, Login7,
    TmRequest, ENCRYPT_NOT_SUP, ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_REQ,
};
use crate::tokens::{self, *};
use crate::wire::{
    proto, read_message, write_message, Message, PreloginWrapper, WireError, INITIAL_PACKET_SIZE,
    PKT_ATTENTION, PKT_LOGIN7, PKT_PRELOGIN, PKT_REPLY, PKT_RPC, PKT_SQL_BATCH, PKT_TRANSACTION,
};
use crate::{lock, AuthKind, Encryption, LoginRecord, QueryRecord, RequestKind, Shared, TlsUse};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;

/// What the PRELOGIN negotiation decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    LoginOnly,
    Full,
    /// Answer, then close (the server requires TLS, the client cannot).
    Refuse,
}

/// MS-TDS 2.2.6.5: the server's ENCRYPTION answer for the client's option.
fn negotiate(server: Encryption, client: u8) -> (u8, Mode) {
    match server {
        Encryption::NotSupported => (ENCRYPT_NOT_SUP, Mode::Plain),
        Encryption::Off => match client {
            ENCRYPT_OFF => (ENCRYPT_OFF, Mode::LoginOnly),
            ENCRYPT_NOT_SUP => (ENCRYPT_NOT_SUP, Mode::Plain),
            _ => (ENCRYPT_ON, Mode::Full),
        },
        Encryption::On => match client {
            ENCRYPT_NOT_SUP => (ENCRYPT_REQ, Mode::Refuse),
            ENCRYPT_OFF => (ENCRYPT_REQ, Mode::Full),
            _ => (ENCRYPT_ON, Mode::Full),
        },
    }
}

/// Counts the connection as open while alive.
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.record(|r| {
            r.stats.connections_total += 1;
            r.stats.open_connections += 1;
        });
        Self(shared.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.record(|r| r.stats.open_connections -= 1);
    }
}

/// Counts a query as running while alive (for max concurrency).
struct ActiveGuard(Arc<Shared>);

impl ActiveGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.record(|r| {
            r.stats.active_queries += 1;
            r.stats.max_concurrent_queries =
                r.stats.max_concurrent_queries.max(r.stats.active_queries);
        });
        Self(shared.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.record(|r| r.stats.active_queries -= 1);
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) async fn run(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>, id: u64) {
    let _open = OpenGuard::new(&shared);
    match serve(tcp, &shared, id).await {
        Ok(()) => tracing::debug!("tds test server: connection {id} from {peer} closed"),
        Err(e) => tracing::warn!("tds test server: connection {id} from {peer} closed: {e}"),
    }
}

async fn serve(mut tcp: TcpStream, shared: &Arc<Shared>, id: u64) -> Result<(), WireError> {
    tcp.set_nodelay(true).ok();
    let spid = (50 + id % 30_000) as u16;
    let Some(msg) = read_message(&mut tcp).await? else {
        return Ok(());
    };
    if msg.ty != PKT_PRELOGIN {
        return Err(proto(format!(
            "expected PRELOGIN (0x12) first, got packet type {:#04x}",
            msg.ty
        )));
    }
    let pre = parse_prelogin(&msg.payload)?;
    let (answer, mode) = negotiate(shared.encryption, pre.encryption);
    let fed_auth = pre.fed_auth_required.then_some(true);
    write_message(
        &mut tcp,
        PKT_REPLY,
        &prelogin_response(answer, fed_auth),
        INITIAL_PACKET_SIZE,
        spid,
        true,
    )
    .await?;

    let (mut stream, login_msg, tls): (BoxIo, Option<Message>, TlsUse) = match mode {
        Mode::Refuse => {
            tcp.shutdown().await.ok();
            return Err(proto(
                "client cannot encrypt but the server forces encryption",
            ));
        }
        Mode::Plain => {
            let m = read_message(&mut tcp).await?;
            (Box::new(tcp), m, TlsUse::None)
        }
        Mode::LoginOnly => {
            let mut tls = shared.tls.accept(PreloginWrapper::new(tcp)).await?;
            tls.get_mut().0.handshake_done();
            let m = read_message(&mut tls).await?;
            let (wrapper, _) = tls.into_inner();
            (Box::new(wrapper.into_inner()), m, TlsUse::LoginOnly)
        }
        Mode::Full => {
            let mut tls = shared.tls.accept(PreloginWrapper::new(tcp)).await?;
            tls.get_mut().0.handshake_done();
            let m = read_message(&mut tls).await?;
            (Box::new(tls), m, TlsUse::Full)
        }
    };
    let Some(login_msg) = login_msg else {
        return Ok(());
    };
    if login_msg.ty != PKT_LOGIN7 {
        return Err(proto(format!(
            "expected LOGIN7 (0x10), got packet type {:#04x}",
            login_msg.ty
        )));
    }
    let login = parse_login7(&login_msg.payload)?;
    let packet_size = match login.packet_size {
        0 => 4096,
        n => n.clamp(512, 32_767),
    } as usize;
    let (ok, shown_user, auth) = authenticate(shared, &login);
    shared.record(|r| {
        if ok {
            r.stats.logins_ok += 1;
        } else {
            r.stats.logins_failed += 1;
        }
        r.logins.push(LoginRecord {
            connection_id: id,
            succeeded: ok,
            user: login.user.clone(),
            app_name: login.app_name.clone(),
            database: login.database.clone(),
            server_name: login.server_name.clone(),
            host_name: login.host_name.clone(),
            read_only_intent: login.read_only,
            tds_version: login.tds_version,
            packet_size: login.packet_size,
            tls,
            auth,
        });
    });
    if !ok {
        let mut buf = Vec::new();
        tokens::error(
            &mut buf,
            18456,
            1,
            14,
            &format!("Login failed for user '{shown_user}'."),
        );
        done(&mut buf, TOKEN_DONE, DONE_ERROR, 0, 0);
        write_message(&mut stream, PKT_REPLY, &buf, packet_size, spid, true).await?;
        stream.shutdown().await.ok();
        return Ok(());
    }

    let database = if login.database.is_empty() {
        "master".to_string()
    } else {
        login.database.clone()
    };
    let mut buf = Vec::new();
    envchange_str(&mut buf, ENV_DATABASE, &database, "master");
    info(
        &mut buf,
        5701,
        2,
        0,
        &format!("Changed database context to '{database}'."),
    );
    envchange_str(&mut buf, ENV_LANGUAGE, "us_english", "");
    info(
        &mut buf,
        5703,
        1,
        0,
        "Changed language setting to us_english.",
    );
    envchange_bytes(&mut buf, ENV_COLLATION, &COLLATION, &[]);
    envchange_str(
        &mut buf,
        ENV_PACKET_SIZE,
        &packet_size.to_string(),
        &packet_size.to_string(),
    );
    login_ack(&mut buf);
    if auth == AuthKind::AadToken {
        fedauth_ack(&mut buf);
    }
    done(&mut buf, TOKEN_DONE, DONE_FINAL, 0, 0);
    write_message(&mut stream, PKT_REPLY, &buf, packet_size, spid, true).await?;

    let (rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(16);
    let reader = AbortOnDrop(tokio::spawn(reader_loop(rd, tx)).abort_handle());
    let mut session = Session {
        shared: shared.clone(),
        id,
        spid,
        packet_size,
        encrypted: tls == TlsUse::Full,
        wr,
        rx,
        pending: VecDeque::new(),
        database,
        transactions: 0,
    };
    let result = session.run().await;
    session.wr.shutdown().await.ok();
    drop(reader);
    result
}

/// Returns (accepted, user name for the error message, kind).
fn authenticate(shared: &Shared, login: &Login7) -> (bool, String, AuthKind) {
    let fail = shared.fail_logins.load(std::sync::atomic::Ordering::SeqCst);
    if let Some(token) = &login.fed_auth_token {
        let ok = !fail && shared.aad_tokens.iter().any(|t| t == token);
        return (
            ok,
            "<token-identified principal>".to_string(),
            AuthKind::AadToken,
        );
    }
    if login.integrated_security {
        return (false, login.user.clone(), AuthKind::Integrated);
    }
    let ok = !fail
        && lock(&shared.users)
            .get(&login.user)
            .is_some_and(|p| *p == login.password);
    (ok, login.user.clone(), AuthKind::SqlPassword)
}

async fn reader_loop(mut rd: ReadHalf<BoxIo>, tx: mpsc::Sender<Result<Message, WireError>>) {
    loop {
        match read_message(&mut rd).await {
            Ok(Some(m)) => {
                if tx.send(Ok(m)).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

enum Flow {
    Continue,
    Close,
}

struct Session {
    shared: Arc<Shared>,
    id: u64,
    spid: u16,
    packet_size: usize,
    encrypted: bool,
    wr: WriteHalf<BoxIo>,
    rx: mpsc::Receiver<Result<Message, WireError>>,
    /// Messages that arrived while a query was being delayed.
    pending: VecDeque<Message>,
    database: String,
    transactions: u32,
}

impl Session {
    async fn run(&mut self) -> Result<(), WireError> {
        loop {
            let msg = match self.pending.pop_front() {
                Some(m) => m,
                None => match self.rx.recv().await {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                },
            };
            let flow = match msg.ty {
                PKT_SQL_BATCH => {
                    let text = parse_sql_batch(&msg.payload)?;
                    self.query(text, RequestKind::Batch).await?
                }
                PKT_RPC => {
                    let rpc = parse_rpc(&msg.payload)?;
                    tracing::trace!("rpc {}", rpc.procedure);
                    self.query(rpc.text, RequestKind::Rpc).await?
                }
                PKT_ATTENTION => {
                    self.attention().await?;
                    Flow::Continue
                }
                PKT_TRANSACTION => {
                    let req = parse_tm(&msg.payload)?;
                    self.transaction(req).await?;
                    Flow::Continue
                }
                other => return Err(proto(format!("unsupported packet type {other:#04x}"))),
            };
            if let Flow::Close = flow {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, buf: &[u8], eom: bool) -> Result<(), WireError> {
        write_message(
            &mut self.wr,
            PKT_REPLY,
            buf,
            self.packet_size,
            self.spid,
            eom,
        )
        .await?;
        Ok(())
    }

    async fn attention(&mut self) -> Result<(), WireError> {
        self.shared.record(|r| r.stats.attentions += 1);
        let mut buf = Vec::new();
        done(&mut buf, TOKEN_DONE, DONE_ATTN, 0, 0);
        self.send(&buf, true).await
    }

    async fn transaction(&mut self, req: TmRequest) -> Result<(), WireError> {
        let id = self.id;
        let desc = move |n: u32| ((id << 32) | n as u64).to_le_bytes();
        let mut buf = Vec::new();
        let current = desc(self.transactions);
        let begin = |buf: &mut Vec<u8>, this: &mut Session| {
            this.transactions += 1;
            envchange_bytes(buf, ENV_BEGIN_TRAN, &desc(this.transactions), &[]);
        };
        match req {
            TmRequest::Begin => begin(&mut buf, self),
            TmRequest::Commit { begin_new } => {
                envchange_bytes(&mut buf, ENV_COMMIT_TRAN, &[], &current);
                if begin_new {
                    begin(&mut buf, self);
                }
            }
            TmRequest::Rollback { begin_new } => {
                envchange_bytes(&mut buf, ENV_ROLLBACK_TRAN, &[], &current);
                if begin_new {
                    begin(&mut buf, self);
                }
            }
            TmRequest::Other(ty) => {
                tracing::debug!("transaction manager request {ty} answered with DONE")
            }
        }
        done(&mut buf, TOKEN_DONE, DONE_FINAL, 0, 0);
        self.send(&buf, true).await
    }

    fn record_query(
        &self,
        fixture: Option<String>,
        answer_index: Option<usize>,
        kind: RequestKind,
        text: &str,
    ) {
        let unmatched = fixture.is_none();
        let record = QueryRecord {
            connection_id: self.id,
            fixture,
            answer_index,
            kind,
            text: text.to_string(),
            encrypted: self.encrypted,
        };
        self.shared.record(|r| {
            r.stats.queries += 1;
            if unmatched {
                r.stats.unmatched_queries += 1;
            }
            r.queries.push(record);
        });
    }

    async fn query(&mut self, text: String, kind: RequestKind) -> Result<Flow, WireError> {
        let rpc = kind == RequestKind::Rpc;
        let _active = ActiveGuard::new(&self.shared);
        let sel = match self.shared.select(&text) {
            Ok(sel) => sel,
            Err(why) => {
                if let Some(buf) = self.builtin(&text, rpc) {
                    let record = QueryRecord {
                        connection_id: self.id,
                        fixture: None,
                        answer_index: None,
                        kind,
                        text: text.clone(),
                        encrypted: self.encrypted,
                    };
                    self.shared.record(|r| {
                        r.stats.queries += 1;
                        r.queries.push(record);
                    });
                    self.send(&buf, true).await?;
                    return Ok(Flow::Continue);
                }
                self.record_query(None, None, kind, &text);
                let head: String = text.trim().chars().take(80).collect();
                let mut buf = Vec::new();
                error_response(
                    &mut buf,
                    &ServerError {
                        number: 208,
                        state: 1,
                        class: 16,
                        message: format!(
                            "Invalid object name 'sqlvigil-testkit-tds fixture'. {why}: {head}"
                        ),
                    },
                    rpc,
                );
                self.send(&buf, true).await?;
                return Ok(Flow::Continue);
            }
        };
        let fixture = sel.fixture.clone();
        self.record_query(Some(fixture.name.clone()), Some(sel.index), kind, &text);
        let answer = &fixture.answers[sel.index];

        if let Some(delay) = sel.faults.delay.or(answer.delay) {
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    m = self.rx.recv() => match m {
                        Some(Ok(m)) if m.ty == PKT_ATTENTION => {
                            self.attention().await?;
                            return Ok(Flow::Continue);
                        }
                        Some(Ok(m)) => self.pending.push_back(m),
                        Some(Err(_)) | None => {
                            self.shared.record(|r| r.stats.abandoned_queries += 1);
                            return Ok(Flow::Close);
                        }
                    }
                }
            }
        }

        let mut buf = Vec::new();
        let mut disconnect = false;
        let body_error = match (&sel.faults.deny, &answer.body) {
            (Some(deny), _) => Some(deny.clone()),
            (None, AnswerBody::Error(e)) => Some(e.clone()),
            (None, AnswerBody::ResultSets(sets)) => {
                let limit = sel
                    .faults
                    .disconnect_after_rows
                    .or(answer.disconnect_after_rows);
                let mut remaining = limit;
                let mut failure = None;
                for (i, rs) in sets.iter().enumerate() {
                    let last = i + 1 == sets.len();
                    match encode_result_set(rs, remaining, &mut buf) {
                        Ok(n) => {
                            if let Some(r) = remaining.as_mut() {
                                *r -= n.min(*r);
                                if *r == 0 || last {
                                    disconnect = true;
                                    break;
                                }
                            }
                            let status = DONE_COUNT | if last { DONE_FINAL } else { DONE_MORE };
                            if rpc {
                                done(
                                    &mut buf,
                                    TOKEN_DONEINPROC,
                                    DONE_COUNT | DONE_MORE,
                                    CMD_SELECT,
                                    n,
                                );
                            } else {
                                done(&mut buf, TOKEN_DONE, status, CMD_SELECT, n);
                            }
                        }
                        Err(e) => {
                            failure = Some(ServerError {
                                number: 50000,
                                state: 1,
                                class: 16,
                                message: format!(
                                    "sqlvigil-testkit-tds: fixture '{}' answer {} result set {i}: {e}",
                                    fixture.name, sel.index
                                ),
                            });
                            break;
                        }
                    }
                }
                if failure.is_none() && !disconnect {
                    if rpc {
                        return_status(&mut buf, 0);
                        done(&mut buf, TOKEN_DONEPROC, DONE_FINAL, CMD_EXECUTE, 0);
                    } else if sets.is_empty() {
                        done(&mut buf, TOKEN_DONE, DONE_FINAL, 0, 0);
                    }
                }
                failure
            }
        };
        if let Some(e) = body_error {
            buf.clear();
            disconnect = false;
            if e.number == 50000 {
                tracing::warn!("tds test server: {}", e.message);
            }
            error_response(&mut buf, &e, rpc);
        }
        if disconnect {
            self.send(&buf, false).await?;
            self.wr.shutdown().await.ok();
            return Ok(Flow::Close);
        }
        self.send(&buf, true).await?;
        Ok(Flow::Continue)
    }

    /// Statements answered without a fixture: `USE db`, `SET ...`, and transaction
    /// statements.
    fn builtin(&mut self, text: &str, rpc: bool) -> Option<Vec<u8>> {
        let norm = normalize_sql(text);
        let norm = norm.trim_end_matches(';').trim();
        let mut buf = Vec::new();
        if let Some(db) = norm.strip_prefix("use ") {
            let original = text.trim().trim_end_matches(';').trim();
            let db = original[original.len() - db.len()..]
                .trim()
                .trim_matches(|c| c == '[' || c == ']' || c == '"')
                .to_string();
            envchange_str(&mut buf, ENV_DATABASE, &db, &self.database);
            info(
                &mut buf,
                5701,
                1,
                0,
                &format!("Changed database context to '{db}'."),
            );
            self.database = db;
        } else if !(norm.starts_with("set ")
            || matches!(
                norm,
                "begin tran"
                    | "begin transaction"
                    | "commit"
                    | "commit tran"
                    | "commit transaction"
                    | "rollback"
                    | "rollback tran"
                    | "rollback transaction"
            ))
        {
            return None;
        }
        if rpc {
            return_status(&mut buf, 0);
            done(&mut buf, TOKEN_DONEPROC, DONE_FINAL, CMD_EXECUTE, 0);
        } else {
            done(&mut buf, TOKEN_DONE, DONE_FINAL, 0, 0);
        }
        Some(buf)
    }
}

fn error_response(buf: &mut Vec<u8>, e: &ServerError, rpc: bool) {
    tokens::error(buf, e.number, e.state, e.class, &e.message);
    if rpc {
        done(buf, TOKEN_DONEPROC, DONE_ERROR, CMD_EXECUTE, 0);
    } else {
        done(buf, TOKEN_DONE, DONE_ERROR, CMD_SELECT, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_negotiation_follows_ms_tds() {
        use Encryption::*;
        assert_eq!(
            negotiate(NotSupported, ENCRYPT_ON),
            (ENCRYPT_NOT_SUP, Mode::Plain)
        );
        assert_eq!(negotiate(Off, ENCRYPT_OFF), (ENCRYPT_OFF, Mode::LoginOnly));
        assert_eq!(negotiate(Off, ENCRYPT_ON), (ENCRYPT_ON, Mode::Full));
        assert_eq!(negotiate(Off, ENCRYPT_REQ), (ENCRYPT_ON, Mode::Full));
        assert_eq!(
            negotiate(Off, ENCRYPT_NOT_SUP),
            (ENCRYPT_NOT_SUP, Mode::Plain)
        );
        assert_eq!(negotiate(On, ENCRYPT_OFF), (ENCRYPT_REQ, Mode::Full));
        assert_eq!(negotiate(On, ENCRYPT_NOT_SUP), (ENCRYPT_REQ, Mode::Refuse));
        assert_eq!(negotiate(On, ENCRYPT_ON), (ENCRYPT_ON, Mode::Full));
    }
}
