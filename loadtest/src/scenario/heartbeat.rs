//! `heartbeat`: closed-loop maximum throughput of stream heartbeats.
//!
//! Every connection sends its next request as soon as the previous one is answered. The
//! user population is dealt across connections (user `u` belongs to connection
//! `u % connections`), so no two connections ever heartbeat the same user and each
//! connection can know, without asking anyone, which of its users already hold all 3 slots.
//! Those are the users an over-limit attempt goes to, which makes every such attempt one
//! the server must refuse.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::Method;

use crate::cli::Contract;
use crate::client::{Conn, Req, header_value};
use crate::ids;
use crate::runner::{Control, ShardStats, connections_of, finish_shard};
use crate::stats::{Live, Timing};
use crate::target::Target;

pub const OPS: [&str; 2] = ["renew", "over-limit"];
const RENEW: usize = 0;
const OVER_LIMIT: usize = 1;

/// The limit playstate applies by default; users hold at most this many sessions.
const MAX_SESSIONS: u64 = 3;

/// Everything a connection needs to generate its requests.
pub struct Plan {
    pub contract: Contract,
    pub users: u64,
    pub over_limit_share: f64,
    pub prefix: String,
    pub seed: u64,
    pub connections: u32,
    pub targets: Vec<Target>,
}

impl Plan {
    /// How many sessions (1 to 3) user `u` keeps alive.
    pub fn sessions_of(&self, user: u64) -> u64 {
        1 + ids::mix(user ^ self.seed) % MAX_SESSIONS
    }

    fn user_id(&self, user: u64) -> String {
        format!("{}-u{user}", self.prefix)
    }

    /// The heartbeat of session `session` of `user`; session 3 is the over-limit one.
    fn request(&self, user: u64, session: u64, authorization: Option<&http::HeaderValue>) -> Req {
        let user_id = self.user_id(user);
        let session_id = format!("{user_id}-s{session}");
        let stream_id = format!(
            "{}-title{}",
            self.prefix,
            ids::mix(user * 4 + session) % 5_000
        );
        match self.contract {
            Contract::V1 => {
                let body = serde_json::json!({ "streamId": stream_id }).to_string();
                Req::new(
                    Method::PUT,
                    format!("/v1/streams/{session_id}"),
                    authorization.cloned(),
                    Bytes::from(body),
                )
            }
            Contract::Heartbeat => {
                let body = serde_json::json!({
                    "userId": user_id,
                    "streamId": stream_id,
                    "sessionId": session_id,
                })
                .to_string();
                Req::new(Method::POST, "/heartbeat".into(), None, Bytes::from(body))
            }
        }
    }
}

/// A user's prepared requests, built the first time the user comes up.
struct UserReqs {
    renew: Vec<Req>,
    over_limit: Option<Req>,
}

/// The request sequence of one connection: its users' sessions round-robin, with
/// over-limit attempts mixed in at the requested share.
pub struct Generator<'p> {
    plan: &'p Plan,
    connection: u64,
    stride: u64,
    local_users: u64,
    /// Next (local user, session) to renew.
    cursor: (u64, u64),
    first_pass: bool,
    /// Local indexes of users known to hold all their 3 sessions.
    full: Vec<u64>,
    cache: Vec<Option<Box<UserReqs>>>,
    rng: fastrand::Rng,
}

impl<'p> Generator<'p> {
    pub fn new(plan: &'p Plan, connection: u32) -> Generator<'p> {
        let connection = u64::from(connection);
        let stride = u64::from(plan.connections);
        let local_users = plan.users.saturating_sub(connection).div_ceil(stride);
        Generator {
            plan,
            connection,
            stride,
            local_users,
            cursor: (0, 0),
            first_pass: true,
            full: Vec::new(),
            cache: (0..local_users).map(|_| None).collect(),
            rng: fastrand::Rng::with_seed(ids::mix(plan.seed ^ (connection << 32))),
        }
    }

    fn user(&self, local: u64) -> u64 {
        self.connection + local * self.stride
    }

    fn prepared(&mut self, local: u64) -> &mut UserReqs {
        let user = self.user(local);
        let plan = self.plan;
        self.cache[local as usize].get_or_insert_with(|| {
            let auth = match plan.contract {
                Contract::V1 => Some(header_value(ids::authorization(&plan.user_id(user)))),
                Contract::Heartbeat => None,
            };
            let renew = (0..plan.sessions_of(user))
                .map(|s| plan.request(user, s, auth.as_ref()))
                .collect();
            Box::new(UserReqs {
                renew,
                over_limit: None,
            })
        })
    }

    /// The next operation and its request.
    pub fn next(&mut self) -> (usize, &Req) {
        let plan = self.plan;
        if plan.over_limit_share > 0.0
            && !self.full.is_empty()
            && self.rng.f64() < plan.over_limit_share
        {
            let local = self.full[self.rng.usize(..self.full.len())];
            let user = self.user(local);
            let reqs = self.prepared(local);
            let auth = reqs.renew[0].authorization.clone();
            let req = reqs
                .over_limit
                .get_or_insert_with(|| plan.request(user, MAX_SESSIONS, auth.as_ref()));
            return (OVER_LIMIT, req);
        }

        let (local, session) = self.cursor;
        let sessions = plan.sessions_of(self.user(local));
        self.cursor = if session + 1 < sessions {
            (local, session + 1)
        } else {
            // Sends on a connection are sequential, so by the time the next request is
            // generated this user's last session has been heartbeated.
            if self.first_pass && sessions == MAX_SESSIONS {
                self.full.push(local);
            }
            if local + 1 < self.local_users {
                (local + 1, 0)
            } else {
                self.first_pass = false;
                (0, 0)
            }
        };
        (RENEW, &self.prepared(local).renew[session as usize])
    }
}

/// One load-generator thread: its connections, each sending back to back.
pub async fn shard(plan: Arc<Plan>, ctl: Arc<Control>, index: usize, threads: usize) -> ShardStats {
    let stats = Rc::new(RefCell::new(ShardStats::new(OPS.len(), false)));
    let tasks: Vec<_> = connections_of(index, threads, plan.connections)
        .map(|c| {
            let (plan, ctl, stats) = (plan.clone(), ctl.clone(), stats.clone());
            tokio::task::spawn_local(async move { connection(&plan, &ctl, c, &stats).await })
        })
        .collect();
    finish_shard(tasks, stats).await
}

async fn connection(plan: &Plan, ctl: &Control, index: u32, stats: &RefCell<ShardStats>) {
    let target = &plan.targets[index as usize % plan.targets.len()];
    let mut generator = Generator::new(plan, index);
    let mut conn: Option<Conn> = None;
    while !ctl.should_stop(Instant::now()) {
        let c = match conn.as_mut() {
            Some(c) if c.is_open() => c,
            _ => match Conn::connect(target, ctl.timeout).await {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    stats.borrow_mut().connect_errors += 1;
                    Live::add(&ctl.live.errors, 1);
                    ctl.backoff().await;
                    continue;
                }
            },
        };
        if !ctl.take_permit() {
            break;
        }
        let (op, req) = generator.next();
        let started = Instant::now();
        let result = c.send(req, ctl.timeout).await;
        let timing = Timing {
            intended: started,
            started,
            finished: Instant::now(),
        };
        let mut stats = stats.borrow_mut();
        let op = &mut stats.ops[op];
        op.sent += 1;
        match result {
            Ok(status) => {
                op.record_response(status, &timing, Duration::MAX);
                Live::add(&ctl.live.responses, 1);
            }
            Err(kind) => {
                op.record_error(kind, Some(&timing), Duration::MAX);
                Live::add(&ctl.live.errors, 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn plan(contract: Contract, users: u64, connections: u32, share: f64) -> Plan {
        Plan {
            contract,
            users,
            over_limit_share: share,
            prefix: "t".into(),
            seed: 5,
            connections,
            targets: Vec::new(),
        }
    }

    fn session_of(req: &Req) -> String {
        req.uri.path().rsplit('/').next().unwrap().to_owned()
    }

    #[test]
    fn connections_share_the_population_without_overlap() {
        let p = plan(Contract::V1, 1_000, 7, 0.0);
        let mut seen = HashMap::new();
        for c in 0..7 {
            let mut g = Generator::new(&p, c);
            let per_pass: u64 = (0..g.local_users).map(|l| p.sessions_of(g.user(l))).sum();
            for _ in 0..per_pass {
                let (op, req) = g.next();
                assert_eq!(op, RENEW);
                let user = session_of(req).rsplit_once("-s").unwrap().0.to_owned();
                let owner = *seen.entry(user).or_insert(c);
                assert_eq!(owner, c, "a user is heartbeated by one connection only");
            }
            // A full pass over the connection's users wraps back to its first user.
            assert!(!g.first_pass);
        }
        assert_eq!(seen.len(), 1_000);
    }

    #[test]
    fn users_hold_one_to_three_sessions() {
        let p = plan(Contract::V1, 3_000, 1, 0.0);
        let mut counts = [0u32; 4];
        for u in 0..3_000 {
            counts[p.sessions_of(u) as usize] += 1;
        }
        assert_eq!(counts[0], 0);
        for c in &counts[1..] {
            assert!((800..1_200).contains(c), "{counts:?}");
        }
    }

    #[test]
    fn over_limit_goes_to_users_that_hold_three_sessions() {
        let p = plan(Contract::V1, 500, 2, 0.2);
        let mut g = Generator::new(&p, 1);
        let mut renewed: HashMap<String, HashSet<String>> = HashMap::new();
        let mut over = 0;
        for _ in 0..20_000 {
            let (op, req) = g.next();
            let session = session_of(req);
            let (user, n) = session.rsplit_once("-s").unwrap();
            if op == OVER_LIMIT {
                over += 1;
                assert_eq!(n, "3");
                let held = &renewed[user];
                assert_eq!(held.len(), 3, "{user} must already hold 3 sessions");
            } else {
                assert!(n != "3");
                renewed
                    .entry(user.to_owned())
                    .or_default()
                    .insert(n.to_owned());
            }
        }
        let share = f64::from(over) / 20_000.0;
        assert!((0.17..0.23).contains(&share), "share {share}");
    }

    #[test]
    fn v1_requests_carry_a_token_and_a_stream_id() {
        let p = plan(Contract::V1, 10, 1, 0.0);
        let mut g = Generator::new(&p, 0);
        let (_, req) = g.next();
        assert_eq!(req.method, Method::PUT);
        assert_eq!(req.uri.path(), "/v1/streams/t-u0-s0");
        let auth = req.authorization.as_ref().unwrap().to_str().unwrap();
        assert_eq!(auth, ids::authorization("t-u0"));
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert!(body["streamId"].as_str().unwrap().starts_with("t-title"));
    }

    #[test]
    fn compat_requests_name_user_stream_and_session_in_the_body() {
        let p = plan(Contract::Heartbeat, 10, 1, 0.0);
        let mut g = Generator::new(&p, 0);
        let (_, req) = g.next();
        assert_eq!(req.method, Method::POST);
        assert_eq!(req.uri.path(), "/heartbeat");
        assert!(req.authorization.is_none());
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["userId"], "t-u0");
        assert_eq!(body["sessionId"], "t-u0-s0");
        assert!(body["streamId"].is_string());
    }
}
