//! HQ's accept loop, built to hold under abuse: every connection has a deadline for its
//! request headers (a slowloris that trickles them is cut), an idle keep-alive connection is
//! closed, and the number of open connections is capped well under the fd limit with a share
//! kept for connections that have shown a valid token. When the unauthenticated share is
//! full, the oldest unauthenticated connection is shed to make room for the new one, so a
//! flood of idle connections cannot keep an agent out: the agent's connection is the newest
//! and sends its request at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Connection limits of `fleet serve`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A connection must send a request's headers within this long of opening (or of its
    /// last answer).
    pub header_timeout: Duration,
    /// A request body must arrive within this long.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Of those, how many only connections that showed a valid token may hold.
    pub reserved_authenticated: usize,
}

impl Limits {
    /// The connection cap for a process that may open `fd_limit` files: three quarters of it
    /// less room for the store and logs, at most 16,384; a quarter is kept for authenticated
    /// connections.
    pub fn for_fd_limit(fd_limit: u64) -> (usize, usize) {
        let cap = usize::try_from((fd_limit.saturating_mul(3) / 4).saturating_sub(64))
            .unwrap_or(usize::MAX)
            .clamp(16, 16_384);
        (cap, cap / 4)
    }
}

/// One open connection, as requests on it see it (a request extension).
#[derive(Debug)]
pub struct Conn {
    id: u64,
    authenticated: AtomicBool,
    active: AtomicUsize,
    served: AtomicBool,
    /// When the last request ended (or the connection opened), as ms after `opened`.
    last_ms: AtomicU64,
    opened: Instant,
    kill: tokio::sync::Notify,
    /// The first request ended: the watchdog's deadline changes from the header timeout to
    /// the idle timeout (later requests only move it later, which the watchdog finds when it
    /// wakes, so they cost no wake-up).
    activity: tokio::sync::Notify,
    pool: Arc<Pool>,
}

impl Conn {
    /// Marks the connection as used with a valid token: it leaves the unauthenticated share
    /// and is no longer shed for newcomers.
    pub fn authenticated(&self) {
        if !self.authenticated.swap(true, Ordering::AcqRel) {
            self.pool.forget_pending(self.id);
        }
    }

    fn begin(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    fn end(&self) {
        self.last_ms.store(self.elapsed_ms(), Ordering::Release);
        self.active.fetch_sub(1, Ordering::AcqRel);
        if !self.served.swap(true, Ordering::AcqRel) {
            self.activity.notify_one();
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When the connection, if still without a request, is to be closed.
    fn deadline(&self, limits: &Limits) -> Instant {
        let wait = if self.served.load(Ordering::Acquire) {
            limits.idle_timeout
        } else {
            limits.header_timeout
        };
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Acquire)) + wait
    }
}

/// The open connections.
#[derive(Debug, Default)]
struct Pool {
    /// Connections that have not shown a valid token, oldest first.
    pending: Mutex<BTreeMap<u64, Arc<Conn>>>,
    total: AtomicUsize,
    next_id: AtomicU64,
    shed: AtomicU64,
}

impl Pool {
    fn forget_pending(&self, id: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
    }

    fn pending_len(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Closes the oldest unauthenticated connection that is not in the middle of a request
    /// (a request that has arrived is answered; its body is bounded by the body timeout);
    /// false when there is none.
    fn shed_oldest(&self) -> bool {
        let oldest = self.pending.lock().ok().and_then(|mut p| {
            let id = p
                .iter()
                .find(|(_, c)| c.active.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)?;
            p.remove_entry(&id)
        });
        match oldest {
            Some((_, conn)) => {
                conn.kill.notify_one();
                self.shed.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

/// Connections the kernel queues for `accept` (capped by `net.core.somaxconn`). Deeper than
/// tokio's default of 1,024: when a flood of connections fills the queue, the kernel drops an
/// agent's SYN and its connect waits a second for the retry.
const BACKLOG: u32 = 8192;

/// Listens on `addr` with a deep accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's and tokio's listeners do on Unix: a restarted HQ can bind at once.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish (for
/// at most 5 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let pool = Arc::new(Pool::default());
    let limits = Arc::new(limits);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors (or a connection reset before accept): wait
                        // for connections to close instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let total = pool.total.load(Ordering::Acquire);
                let unauthenticated_share = limits
                    .max_connections
                    .saturating_sub(limits.reserved_authenticated)
                    .max(1);
                if total >= limits.max_connections || pool.pending_len() >= unauthenticated_share {
                    // Full: the oldest connection without a token goes; with none to shed
                    // (every slot held by authenticated agents) the newcomer is refused.
                    if !pool.shed_oldest() {
                        drop(stream);
                        continue;
                    }
                }
                let _ = stream.set_nodelay(true);
                let conn = Arc::new(Conn {
                    id: pool.next_id.fetch_add(1, Ordering::Relaxed),
                    authenticated: AtomicBool::new(false),
                    active: AtomicUsize::new(0),
                    served: AtomicBool::new(false),
                    last_ms: AtomicU64::new(0),
                    opened: Instant::now(),
                    kill: tokio::sync::Notify::new(),
                    activity: tokio::sync::Notify::new(),
                    pool: pool.clone(),
                });
                if let Ok(mut p) = pool.pending.lock() {
                    p.insert(conn.id, conn.clone());
                }
                pool.total.fetch_add(1, Ordering::AcqRel);
                tasks.spawn(connection(
                    stream,
                    peer,
                    conn,
                    app.clone(),
                    limits.clone(),
                    tls.clone(),
                    stop_rx.clone(),
                ));
            }
        }
    }
    // Stop accepting at once: a client connecting now is refused instead of waiting in the
    // backlog of a server that will never answer it (a restarted HQ listens again shortly).
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// A connection's byte stream: plain TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    app: Router,
    limits: Arc<Limits>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // The TLS handshake runs inside the connection's slot and under the header timeout: a
    // client that connects and never finishes it is cut like one that never sends headers.
    let io: Box<dyn Io> = match tls {
        None => Box::new(stream),
        Some(acceptor) => {
            let handshake = tokio::select! {
                done = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)) => done,
                () = conn.kill.notified() => {
                    conn.pool.forget_pending(conn.id);
                    conn.pool.total.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
            };
            match handshake {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake with {peer} failed: {e}");
                    conn.pool.forget_pending(conn.id);
                    conn.pool.total.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake with {peer} timed out");
                    conn.pool.forget_pending(conn.id);
                    conn.pool.total.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
            }
        }
    };
    let track = conn.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(track.clone());
        track.begin();
        let mut app = app.clone();
        let track = track.clone();
        async move {
            let resp = tower_service::Service::call(&mut app, req.map(axum::body::Body::new)).await;
            track.end();
            resp
        }
    });
    // The watchdog below enforces the header and idle timeouts; hyper's own header timeout
    // (which also runs between keep-alive requests) is only a backstop behind both.
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout.max(limits.idle_timeout))
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(served);
    let mut stopping = false;
    loop {
        // While a request is being answered the clock is not running: look again shortly.
        let wake = if conn.active.load(Ordering::Acquire) > 0 {
            Instant::now() + Duration::from_millis(500)
        } else {
            conn.deadline(&limits)
        };
        tokio::select! {
            _ = served.as_mut() => break,
            () = conn.kill.notified() => break,
            () = conn.activity.notified() => {}
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_err() || *stop.borrow() {
                    served.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                if conn.active.load(Ordering::Acquire) == 0 && Instant::now() >= conn.deadline(&limits) {
                    break;
                }
            }
        }
    }
    conn.pool.forget_pending(conn.id);
    conn.pool.total.fetch_sub(1, Ordering::AcqRel);
}
