//! A TCP proxy to put in front of a node's cluster listener, so that a test can cut the
//! node off from the others and heal the cut again.
//!
//! # How a test uses it
//!
//! One [`Proxy`] per node, in front of that node's cluster listener. The node advertises
//! the proxy's address as its own (`cluster.advertise`, e.g. the environment variable
//! `PLAYSTATE_CLUSTER__ADVERTISE`), so every other node's Raft, forwarding and handoff
//! traffic to it flows through the proxy. A node joining through another should be given
//! that node's *proxy* address with `--join` too, or that traffic goes around the proxy.
//! The node's cluster port is only known once it runs, hence
//! [`Proxy::start_without_upstream`] and [`Proxy::set_upstream`]:
//!
//! ```ignore
//! let proxy = Proxy::start_without_upstream();
//! let advertise = proxy.addr().to_string();
//! env.push(("PLAYSTATE_CLUSTER__ADVERTISE", advertise.as_str()));
//! let node = TestNode::spawn_with(FAST, &args, &env).await;
//! proxy.set_upstream(node.cluster_addr.parse().unwrap());
//! ```
//!
//! (A restarted node keeps its cluster port, so its proxy needs no new upstream; it does
//! get a new process id, which matters for [`Proxy::cut_from`].)
//!
//! Cutting node X off from the others, in both directions:
//!
//! ```ignore
//! proxies[x].cut(); // nothing reaches X any more
//! let pid = nodes[x].pid().unwrap();
//! for (i, proxy) in proxies.iter().enumerate() {
//!     if i != x {
//!         proxy.cut_from(pid); // and X reaches nothing
//!     }
//! }
//! // ... and back together:
//! proxies.iter().for_each(Proxy::heal);
//! ```
//!
//! A cut closes the live connections it covers (both sockets, with a reset, so that the
//! client and the node both notice at once rather than hang on a half-open connection;
//! the nodes' HTTP clients keep connections alive, so refusing only new ones would cut
//! nothing) and then refuses new ones: accepted and reset at once, like a refused
//! connection rather than a black hole. The cut methods return once the connections they
//! close are closed. A heal lets new connections through; the ones a cut closed stay
//! closed, and clients reconnect.
//!
//! Only traffic to the proxy's address is covered: the test's own requests to a node's
//! `cluster_addr` (status, the CLI) go straight to the node and still work during a cut.
//!
//! # Why this design
//!
//! Every node runs on 127.0.0.1 and advertises exactly one cluster address, which every
//! other member dials, so:
//!
//! - A proxy per ordered pair of nodes (X's own way to Y) cannot work: Raft membership
//!   holds one address per node, the same for every member.
//! - Giving each node its own loopback address (127.0.0.2, 127.0.0.3, … all work without
//!   root) does not identify a connection's source either: the node does not bind its
//!   outgoing sockets, and the kernel picks 127.0.0.1 as the source for any 127.0.0.0/8
//!   destination (checked on this machine: a connection to 127.0.0.2 comes from
//!   127.0.0.1). Binding the client side would need a change to the node.
//! - Network namespaces (a namespace per node, veth pairs, packet filters) would need
//!   privileges or unprivileged user namespaces, which this machine happens to allow
//!   (`unshare -rn true` succeeds) but many CI sandboxes do not, plus `ip`/`nft` tooling
//!   and a different way of starting nodes.
//!
//! What does identify the source: the nodes are processes of this test, on this machine.
//! When a connection comes in, the proxy asks the kernel for the inode of its client's end
//! (the peer's address and port, and the proxy's address: an exact sock_diag lookup over
//! netlink, not a scan of `/proc/net/tcp`, see `tcp_inode`), and the
//! process that holds that socket is the one with a `/proc/PID/fd/*` link to
//! `socket:[INODE]`. So [`Proxy::cut_from`] takes a process id (`TestNode::pid`) and covers
//! exactly the connections that process opened, without touching the node and without
//! privileges (a process's `/proc` entries are readable by its owner). This is Linux-only
//! and IPv4-only (every proxy listens on 127.0.0.1); `cut_from` panics rather than quietly
//! cutting nothing where `/proc` is missing.
//!
//! The proxy runs on a thread of its own with its own runtime, so that forwarding goes on
//! while a test blocks its own thread (e.g. running the `playstate cluster` CLI): a stalled
//! proxy would delay heartbeats and bring about elections the test did not ask for.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How long a cut waits for the connections it closes to be closed.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A TCP proxy on 127.0.0.1, forwarding every connection to one upstream address, with
/// cuts: see the module documentation. Stopped, with every connection, when dropped.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// What the proxy's thread and the test share.
#[derive(Default)]
struct State {
    /// Where to forward; `None`: every connection is refused.
    upstream: Option<SocketAddr>,
    /// [`Proxy::cut`]: every connection refused.
    cut: bool,
    /// [`Proxy::cut_from`]: the connections of these processes refused.
    cut_from: BTreeSet<u32>,
    next_id: u64,
    live: HashMap<u64, Live>,
}

/// A connection being forwarded.
struct Live {
    /// The client's address, i.e. its end of the connection.
    client: SocketAddr,
    /// Dropping it makes the relay reset both sockets.
    abort: oneshot::Sender<()>,
    /// Disconnected once the relay has closed both sockets.
    closed: mpsc::Receiver<()>,
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        Proxy::launch(Some(upstream))
    }

    /// A proxy that refuses every connection until [`Proxy::set_upstream`]: for a node
    /// that must know the proxy's address before it starts and binds its own.
    pub fn start_without_upstream() -> Proxy {
        Proxy::launch(None)
    }

    fn launch(upstream: Option<SocketAddr>) -> Proxy {
        let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let state = Arc::new(Mutex::new(State {
            upstream,
            ..State::default()
        }));
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("proxy {addr}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the proxy's runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("the proxy's listener");
                    tokio::select! {
                        _ = stopped => {}
                        () = accept(listener, addr, shared) => {}
                    }
                });
                // Dropping the runtime drops every relay, closing its sockets.
            })
            .expect("start the proxy's thread");
        Proxy {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Where clients connect: the address to advertise, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forwards new connections to `upstream` (the ones already forwarded keep theirs).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        self.lock().upstream = Some(upstream);
    }

    /// Cuts everything: closes every live connection and refuses new ones until
    /// [`Proxy::heal`]. In front of node X: nothing reaches X.
    pub fn cut(&self) {
        let closing: Vec<Live> = {
            let mut state = self.lock();
            state.cut = true;
            state.live.drain().map(|(_, live)| live).collect()
        };
        close(closing);
    }

    /// Cuts the connections process `pid` (e.g. `TestNode::pid`) opens: closes its live
    /// ones and refuses its new ones until [`Proxy::heal_from`] or [`Proxy::heal`], while
    /// every other process's connections go on. On every proxy but node X's: X reaches
    /// no other node. Panics if `/proc` does not show the process's sockets.
    pub fn cut_from(&self, pid: u32) {
        let closing: Vec<Live> = {
            let mut state = self.lock();
            state.cut_from.insert(pid);
            // Under the lock, so that no connection of `pid` is admitted unchecked: one
            // admitted before is in `live` (and its socket in the process's fd table since
            // before it connected); one admitted after is checked against `cut_from`.
            let held = sockets_of(pid).unwrap_or_else(|error| {
                panic!("cannot list /proc/{pid}/fd ({error}): is {pid} a running process?")
            });
            let theirs: Vec<u64> = state
                .live
                .iter()
                .filter(|(_, live)| {
                    tcp_inode(live.client, self.addr).is_some_and(|i| held.contains(&i))
                })
                .map(|(id, _)| *id)
                .collect();
            theirs
                .into_iter()
                .filter_map(|id| state.live.remove(&id))
                .collect()
        };
        close(closing);
    }

    /// Lifts [`Proxy::cut_from`] for `pid`: its new connections are forwarded again
    /// (unless the whole proxy is [`Proxy::cut`]).
    pub fn heal_from(&self, pid: u32) {
        self.lock().cut_from.remove(&pid);
    }

    /// Lifts every cut, [`Proxy::cut`] and [`Proxy::cut_from`] alike: new connections are
    /// forwarded again. The connections the cuts closed stay closed.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.cut = false;
        state.cut_from.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("the proxy's state")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Aborts the `closing` connections and waits until their sockets are closed.
fn close(closing: Vec<Live>) {
    for Live { abort, closed, .. } in closing {
        drop(abort);
        let result = closed.recv_timeout(CLOSE_WAIT);
        assert!(
            !matches!(result, Err(mpsc::RecvTimeoutError::Timeout)),
            "the proxy did not close a cut connection within {CLOSE_WAIT:?}"
        );
    }
}

/// Accepts connections for ever; admits each or resets it at once.
async fn accept(listener: TcpListener, addr: SocketAddr, state: Arc<Mutex<State>>) {
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            // E.g. out of file descriptors: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let admitted = {
            let mut state = state.lock().expect("the proxy's state");
            let upstream = state.upstream;
            match upstream {
                Some(upstream) if !state.cut && !from_any(&state.cut_from, peer, addr) => {
                    let (abort, aborted) = oneshot::channel();
                    let (done, closed) = mpsc::channel();
                    let id = state.next_id;
                    state.next_id += 1;
                    let live = Live {
                        client: peer,
                        abort,
                        closed,
                    };
                    state.live.insert(id, live);
                    Some((id, upstream, aborted, done))
                }
                _ => None,
            }
        };
        match admitted {
            None => reset(client),
            Some((id, upstream, aborted, done)) => {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    relay(client, upstream, aborted).await;
                    // Already gone if a cut took it.
                    state.lock().expect("the proxy's state").live.remove(&id);
                    drop(done);
                });
            }
        }
    }
}

/// Forwards bytes both ways between `client` and a new connection to `upstream`, each
/// direction's end (FIN) passed on, until both ends are done or `aborted` fires (its
/// sender dropped by a cut); then, or on an error, resets both sockets.
async fn relay(mut client: TcpStream, upstream: SocketAddr, mut aborted: oneshot::Receiver<()>) {
    let connected = tokio::select! {
        _ = &mut aborted => None,
        server = TcpStream::connect(upstream) => server.ok(),
    };
    let Some(mut server) = connected else {
        reset(client);
        return;
    };
    // Small Raft messages pass on at once rather than wait for Nagle.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let finished = tokio::select! {
        _ = &mut aborted => false,
        copied = tokio::io::copy_bidirectional(&mut client, &mut server) => copied.is_ok(),
    };
    if !finished {
        reset(client);
        reset(server);
    }
}

/// Closes `stream` with a reset (RST) rather than an orderly end, so that the other side
/// fails at once, whatever it was doing.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Whether one of `pids` holds the client's end of the connection from `client` to
/// `proxy`. False for a client already gone (or where `/proc` is missing).
fn from_any(pids: &BTreeSet<u32>, client: SocketAddr, proxy: SocketAddr) -> bool {
    if pids.is_empty() {
        return false;
    }
    let Some(inode) = tcp_inode(client, proxy) else {
        return false;
    };
    pids.iter()
        .any(|pid| sockets_of(*pid).is_ok_and(|held| held.contains(&inode)))
}

/// The inodes of the sockets process `pid` has open: the targets `socket:[INODE]` of its
/// `/proc/PID/fd/*` links.
fn sockets_of(pid: u32) -> std::io::Result<HashSet<u64>> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?;
    Ok(fds
        .filter_map(Result::ok)
        // A descriptor closed since the listing has no link any more.
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect())
}

/// The inode of the TCP socket with local end `local` and remote end `remote`, asked of
/// the kernel by its four-tuple (sock_diag over netlink, an exact lookup).
///
/// Not `/proc/net/tcp`: reading it walks every socket of the machine, which during a full
/// test run is thousands, taking milliseconds of kernel time per accepted connection.
/// A cut-off node redials dozens of times a second, so the proxy's one thread fell behind
/// its accept queue; SYNs were dropped and retried a second later, and the two healthy
/// nodes' vote requests to each other timed out for ever (no leader, no failover).
fn tcp_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (local, remote) else {
        return None;
    };
    sock_diag::inode_of(local, remote)
}

/// Just enough of `linux/inet_diag.h` to look one TCP socket up.
mod sock_diag {
    use std::mem::size_of;
    use std::net::SocketAddrV4;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const NETLINK_SOCK_DIAG: libc::c_int = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const INET_DIAG_NOCOOKIE: u32 = !0;

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct SockId {
        sport: [u8; 2],
        dport: [u8; 2],
        src: [u32; 4],
        dst: [u32; 4],
        interface: u32,
        cookie: [u32; 2],
    }

    #[repr(C)]
    struct Request {
        header: libc::nlmsghdr,
        family: u8,
        protocol: u8,
        ext: u8,
        pad: u8,
        states: u32,
        id: SockId,
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Answer {
        family: u8,
        state: u8,
        timer: u8,
        retrans: u8,
        id: SockId,
        expires: u32,
        rqueue: u32,
        wqueue: u32,
        uid: u32,
        inode: u32,
    }

    pub(super) fn inode_of(local: SocketAddrV4, remote: SocketAddrV4) -> Option<u64> {
        // SAFETY: a plain socket(2) call; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let request = Request {
            header: libc::nlmsghdr {
                nlmsg_len: size_of::<Request>() as u32,
                nlmsg_type: SOCK_DIAG_BY_FAMILY,
                nlmsg_flags: libc::NLM_F_REQUEST as u16,
                nlmsg_seq: 1,
                nlmsg_pid: 0,
            },
            family: libc::AF_INET as u8,
            protocol: libc::IPPROTO_TCP as u8,
            ext: 0,
            pad: 0,
            states: !0,
            id: SockId {
                sport: local.port().to_be_bytes(),
                dport: remote.port().to_be_bytes(),
                src: [u32::from_ne_bytes(local.ip().octets()), 0, 0, 0],
                dst: [u32::from_ne_bytes(remote.ip().octets()), 0, 0, 0],
                interface: 0,
                cookie: [INET_DIAG_NOCOOKIE; 2],
            },
        };
        // SAFETY: sends the bytes of a `repr(C)` value that lives across the call.
        let sent = unsafe {
            libc::send(
                fd.as_raw_fd(),
                (&request as *const Request).cast(),
                size_of::<Request>(),
                0,
            )
        };
        if sent != size_of::<Request>() as isize {
            return None;
        }
        let mut buffer = [0u8; 512];
        // SAFETY: receives into a buffer of the length given.
        let received =
            unsafe { libc::recv(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
        let header_len = size_of::<libc::nlmsghdr>();
        if received < (header_len + size_of::<Answer>()) as isize {
            // Too short for an answer: an NLMSG_ERROR (no such socket), or nothing.
            return None;
        }
        // SAFETY: the buffer holds at least a header; read unaligned, as bytes came in.
        let header: libc::nlmsghdr = unsafe { std::ptr::read_unaligned(buffer.as_ptr().cast()) };
        if header.nlmsg_type != SOCK_DIAG_BY_FAMILY {
            return None;
        }
        // SAFETY: the length was checked to hold a header and an answer.
        let answer: Answer =
            unsafe { std::ptr::read_unaligned(buffer[header_len..].as_ptr().cast()) };
        Some(u64::from(answer.inode))
    }
}

/// The proxy's own tests, against an echo server.
mod tests {
    use std::io;
    use std::process::Stdio;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
    use tokio::process::{Child, ChildStdin, ChildStdout, Command};
    use tokio::time::timeout;

    use super::*;

    /// Every test's bound, start to end.
    const BOUND: Duration = Duration::from_secs(20);

    /// An echo server on 127.0.0.1: each connection gets back what it sends.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the echo server");
        let addr = listener.local_addr().expect("the echo server's address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    /// Sends `message` on `stream` and reads it back: an error if the connection is
    /// closed or reset first (never hangs on a cut connection: the proxy resets it).
    async fn echo(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
        stream.write_all(message).await?;
        let mut back = vec![0; message.len()];
        stream.read_exact(&mut back).await?;
        assert_eq!(back, message, "the echo");
        Ok(())
    }

    /// [`echo`] on a new connection to `addr`.
    async fn connect_and_echo(addr: SocketAddr, message: &[u8]) -> io::Result<()> {
        let mut stream = TcpStream::connect(addr).await?;
        echo(&mut stream, message).await
    }

    #[tokio::test]
    async fn bytes_pass_until_a_cut_and_again_after_a_heal() {
        timeout(BOUND, async {
            let proxy = Proxy::start(echo_server().await);
            let mut old = TcpStream::connect(proxy.addr()).await.expect("connect");
            echo(&mut old, b"before the cut")
                .await
                .expect("bytes pass through the proxy");

            proxy.cut();
            let error = echo(&mut old, b"during the cut").await;
            assert!(error.is_err(), "a live connection is closed by the cut");
            let error = connect_and_echo(proxy.addr(), b"new during the cut").await;
            assert!(error.is_err(), "a new connection gets no echo: {error:?}");

            proxy.heal();
            connect_and_echo(proxy.addr(), b"after the heal")
                .await
                .expect("a new connection works once healed");
            let error = echo(&mut old, b"after the heal").await;
            assert!(error.is_err(), "a connection the cut closed stays closed");
        })
        .await
        .expect("the test's time bound");
    }

    #[tokio::test]
    async fn without_an_upstream_connections_are_refused_until_one_is_set() {
        timeout(BOUND, async {
            let proxy = Proxy::start_without_upstream();
            let error = connect_and_echo(proxy.addr(), b"too early").await;
            assert!(error.is_err(), "no upstream yet: {error:?}");
            proxy.set_upstream(echo_server().await);
            connect_and_echo(proxy.addr(), b"in time")
                .await
                .expect("forwarded once the upstream is known");
        })
        .await
        .expect("the test's time bound");
    }

    /// A client in another process (bash, whose `/dev/tcp` needs no other tool), as a
    /// node is to the proxies of the others: one connection it keeps (`old MESSAGE`),
    /// and a new one per `new MESSAGE`. Prints the echo, or `closed`.
    struct OtherProcess {
        child: Child,
        input: ChildStdin,
        output: Lines<BufReader<ChildStdout>>,
    }

    const CLIENT: &str = r#"
        trap '' PIPE
        exec 3<>"/dev/tcp/127.0.0.1/$PORT" || exit 1
        while IFS=' ' read -r command message; do
            if [ "$command" = new ]; then
                { exec 4<>"/dev/tcp/127.0.0.1/$PORT"; } 2>/dev/null || { echo closed; continue; }
                fd=4
            else
                fd=3
            fi
            if printf '%s\n' "$message" >&"$fd" 2>/dev/null \
                && IFS= read -r -t 5 reply <&"$fd"; then
                echo "$reply"
            else
                echo closed
            fi
            if [ "$fd" = 4 ]; then exec 4>&-; fi
        done
    "#;

    impl OtherProcess {
        fn start(proxy: SocketAddr) -> OtherProcess {
            let mut child = Command::new("bash")
                .args(["-c", CLIENT])
                .env("PORT", proxy.port().to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("start bash");
            let input = child.stdin.take().expect("stdin");
            let output = BufReader::new(child.stdout.take().expect("stdout")).lines();
            OtherProcess {
                child,
                input,
                output,
            }
        }

        fn pid(&self) -> u32 {
            self.child.id().expect("the client's pid")
        }

        /// Sends `command` (`old MESSAGE` or `new MESSAGE`); the echo, or `closed`.
        async fn ask(&mut self, command: &str) -> String {
            let line = format!("{command}\n");
            self.input.write_all(line.as_bytes()).await.expect("ask");
            self.input.flush().await.expect("ask");
            let answer = self.output.next_line().await.expect("read the answer");
            answer.expect("the client's answer")
        }
    }

    #[tokio::test]
    async fn cut_from_a_process_cuts_its_connections_and_no_others() {
        timeout(BOUND, async {
            let proxy = Proxy::start(echo_server().await);
            let mut other = OtherProcess::start(proxy.addr());
            let mut mine = TcpStream::connect(proxy.addr()).await.expect("connect");
            assert_eq!(other.ask("old hello").await, "hello");
            assert_eq!(other.ask("new hi").await, "hi");
            echo(&mut mine, b"mine").await.expect("this process's echo");

            proxy.cut_from(other.pid());
            assert_eq!(
                other.ask("old again").await,
                "closed",
                "the process's live connection is closed"
            );
            assert_eq!(
                other.ask("new again").await,
                "closed",
                "its new connections are refused"
            );
            echo(&mut mine, b"mine still")
                .await
                .expect("another process's live connection goes on");
            connect_and_echo(proxy.addr(), b"mine anew")
                .await
                .expect("another process connects");

            proxy.heal_from(other.pid());
            assert_eq!(other.ask("new healed").await, "healed");
            echo(&mut mine, b"mine healed")
                .await
                .expect("healing cut nothing");
        })
        .await
        .expect("the test's time bound");
    }
}
