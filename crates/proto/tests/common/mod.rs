//! An in-memory mesh: N protocol instances, virtual time, per-link latency and loss.
//! Like quinn-proto's `Pair`, generalised to a graph. No sockets, no clock, no threads.

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use x0tta6bl4_proto::{
    Config, DecisionKind, Delivery, Destination, Event, Instant, Node, NodeName, Rng,
    SimAuthenticator,
};

/// Simulation-wide signing secret of honest nodes.
pub const SECRET: u64 = 0x5eed;

/// A frame on a simulated link: (arrival, tie-break sequence, to, from, bytes).
type InFlight = (Instant, u64, usize, usize, Vec<u8>);

#[derive(Clone, Copy, Debug)]
pub struct LinkModel {
    pub latency: Duration,
    pub loss: f64,
    pub up: bool,
}

pub struct Mesh {
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub names: Vec<NodeName>,
    pub alive: Vec<bool>,
    pub links: BTreeMap<(usize, usize), LinkModel>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    sequence: u64,
    rng: Rng,
    pub deliveries: Vec<(usize, Delivery, Instant)>,
    pub events: Vec<(Instant, usize, Event)>,
    pub config: Config,
}

pub fn name(i: usize) -> NodeName {
    NodeName::new(&format!("n{i:02}")).unwrap()
}

impl Mesh {
    pub fn new(n: usize, config: Config, seed: u64) -> Mesh {
        let mut mesh = Mesh {
            now: Instant::from_micros(1_000_000),
            nodes: Vec::new(),
            names: (0..n).map(name).collect(),
            alive: vec![true; n],
            links: BTreeMap::new(),
            in_flight: BinaryHeap::new(),
            sequence: 0,
            rng: Rng::seed(seed),
            deliveries: Vec::new(),
            events: Vec::new(),
            config,
        };
        for i in 0..n {
            let node = mesh.make_node(i, 1);
            mesh.nodes.push(node);
        }
        mesh
    }

    fn make_node(&mut self, i: usize, initial_sequence: u64) -> Node {
        let config = Config {
            rng_seed: self.rng.next_u64(),
            initial_sequence,
            ..self.config.clone()
        };
        let auth = SimAuthenticator::new(SECRET, self.names[i].clone());
        Node::new(self.names[i].clone(), config, auth, self.now).unwrap()
    }

    fn key(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    /// Add a link and tell both ends it is up (as a QUIC handshake would).
    pub fn connect(&mut self, a: usize, b: usize, latency: Duration) {
        self.links.insert(
            Self::key(a, b),
            LinkModel {
                latency,
                loss: 0.0,
                up: true,
            },
        );
        let now = self.now;
        let (na, nb) = (self.names[a].clone(), self.names[b].clone());
        assert!(self.nodes[a].handle_link_up(now, nb, None));
        assert!(self.nodes[b].handle_link_up(now, na, None));
        self.drain(a);
        self.drain(b);
    }

    /// A random connected graph: a random tree plus `extra` random edges.
    pub fn random_connected(n: usize, extra: usize, config: Config, seed: u64) -> Mesh {
        let mut mesh = Mesh::new(n, config, seed);
        let mut rng = Rng::seed(seed ^ 0xabcdef);
        for i in 1..n {
            let j = rng.below(i as u64) as usize;
            let latency = Duration::from_micros(200 + rng.below(3_000));
            mesh.connect(i, j, latency);
        }
        let mut added = 0;
        while added < extra {
            let (a, b) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
            if a != b && !mesh.links.contains_key(&Self::key(a, b)) {
                let latency = Duration::from_micros(200 + rng.below(3_000));
                mesh.connect(a, b, latency);
                added += 1;
            }
        }
        mesh
    }

    /// Silent link failure: frames stop crossing, nobody is told.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.links.get_mut(&Self::key(a, b)).unwrap().up = false;
    }

    pub fn repair(&mut self, a: usize, b: usize) {
        self.links.get_mut(&Self::key(a, b)).unwrap().up = true;
    }

    pub fn set_loss(&mut self, a: usize, b: usize, loss: f64) {
        self.links.get_mut(&Self::key(a, b)).unwrap().loss = loss;
    }

    /// The node vanishes like a powered-off device: no goodbye.
    pub fn crash(&mut self, i: usize) {
        self.alive[i] = false;
    }

    /// Bring a crashed node back as a fresh process (sequence numbers start over).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i] = self.make_node(i, 1);
        self.alive[i] = true;
        let neighbours: Vec<usize> = self
            .links
            .keys()
            .filter_map(|&(a, b)| {
                if a == i {
                    Some(b)
                } else if b == i {
                    Some(a)
                } else {
                    None
                }
            })
            .filter(|&j| self.alive[j])
            .collect();
        for j in neighbours {
            let now = self.now;
            let (ni, nj) = (self.names[i].clone(), self.names[j].clone());
            self.nodes[j].handle_link_down(now, &ni);
            self.nodes[j].handle_link_up(now, ni, None);
            self.nodes[i].handle_link_up(now, nj, None);
            self.drain(i);
            self.drain(j);
        }
    }

    /// Restart a node so fast that its neighbours never noticed it was gone: its new
    /// connections replace the old ones (as the daemon's `on_link_up` does), no
    /// link-down in between. Its sequence numbers start from the clock, as the daemon's.
    pub fn restart_unnoticed(&mut self, i: usize) {
        self.nodes[i] = self.make_node(i, self.now.as_micros() / 1_000 + 1);
        self.alive[i] = true;
        let neighbours: Vec<usize> = self
            .links
            .keys()
            .filter_map(|&(a, b)| (a == i).then_some(b).or((b == i).then_some(a)))
            .collect();
        for j in neighbours {
            let now = self.now;
            let (ni, nj) = (self.names[i].clone(), self.names[j].clone());
            assert!(self.nodes[j].handle_link_up(now, ni, None));
            assert!(self.nodes[i].handle_link_up(now, nj, None));
            self.drain(i);
            self.drain(j);
        }
    }

    /// Inject raw bytes as if `from` sent them to `to`.
    pub fn inject(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let from_name = self.names[from].clone();
        self.nodes[to].handle_datagram(self.now, &from_name, &bytes);
        self.drain(to);
    }

    pub fn drain(&mut self, i: usize) {
        while let Some(transmit) = self.nodes[i].poll_transmit() {
            let Destination::Neighbour(to) = transmit.destination else {
                continue;
            };
            let Some(j) = self.names.iter().position(|n| *n == to) else {
                continue;
            };
            let Some(link) = self.links.get(&Self::key(i, j)).copied() else {
                continue;
            };
            if !link.up || !self.alive[i] || (link.loss > 0.0 && self.rng.unit() < link.loss) {
                continue;
            }
            self.sequence += 1;
            let bytes = transmit.message.to_bytes();
            self.in_flight.push(Reverse((
                self.now + link.latency,
                self.sequence,
                j,
                i,
                bytes,
            )));
        }
        while let Some(event) = self.nodes[i].poll_event() {
            if let Event::Delivered(d) = &event {
                self.deliveries.push((i, d.clone(), self.now));
            }
            self.events.push((self.now, i, event));
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let frame = self.in_flight.peek().map(|Reverse((t, ..))| *t);
        let timer = (0..self.nodes.len())
            .filter(|&i| self.alive[i])
            .filter_map(|i| self.nodes[i].poll_timeout())
            .min();
        match (frame, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advance to the next frame arrival or timer and process everything due then.
    pub fn step(&mut self) {
        let next = self.next_time().expect("a mesh always has timers");
        assert!(next >= self.now, "time went backwards");
        self.now = next;
        while self
            .in_flight
            .peek()
            .is_some_and(|Reverse((t, ..))| *t <= self.now)
        {
            let Reverse((_, _, to, from, bytes)) = self.in_flight.pop().unwrap();
            let link = self.links[&Self::key(from, to)];
            if self.alive[to] && link.up {
                let from_name = self.names[from].clone();
                self.nodes[to].handle_datagram(self.now, &from_name, &bytes);
                self.drain(to);
            }
        }
        for i in 0..self.nodes.len() {
            if self.alive[i] && self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                self.nodes[i].handle_timeout(self.now);
                self.drain(i);
                // Liveness: a timer that is still due after it ran would spin a driver.
                let next = self.nodes[i].poll_timeout();
                assert!(
                    next.is_none_or(|t| t > self.now),
                    "{}: a timer is due again at {:?} right after handle_timeout",
                    self.names[i],
                    self.now
                );
            }
        }
    }

    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        let mut steps = 0u64;
        while self.next_time().is_some_and(|t| t <= end) {
            self.step();
            steps += 1;
            assert!(
                steps < 5_000_000,
                "livelock: {steps} steps without reaching the end"
            );
        }
        self.now = end;
    }

    /// Run until `done` holds; returns the time it took, or panics after `limit`.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Mesh) -> bool) -> Duration {
        let start = self.now;
        while !done(self) {
            assert!(
                self.now.saturating_since(start) <= limit,
                "not done within {limit:?}"
            );
            self.step();
        }
        self.now.saturating_since(start)
    }

    pub fn index(&self, name: &NodeName) -> usize {
        self.names.iter().position(|n| n == name).unwrap()
    }

    /// Alive nodes reachable from `i` over up links between alive nodes.
    pub fn truly_reachable(&self, i: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::from([i]);
        let mut queue = VecDeque::from([i]);
        while let Some(u) = queue.pop_front() {
            for (&(a, b), link) in &self.links {
                let v = if a == u {
                    b
                } else if b == u {
                    a
                } else {
                    continue;
                };
                if link.up && self.alive[v] && seen.insert(v) {
                    queue.push_back(v);
                }
            }
        }
        seen
    }

    /// Follow next hops from `i` to `j`; `None` on a loop, a dead end, a dead or
    /// unlinked hop.
    pub fn walk(&self, i: usize, j: usize) -> Option<Vec<usize>> {
        let mut path = vec![i];
        let mut at = i;
        while at != j {
            let route = self.nodes[at].routes().get(&self.names[j])?;
            let next = self.index(&route.next_hop);
            let link = self.links.get(&Self::key(at, next))?;
            if !link.up || !self.alive[next] || path.contains(&next) {
                return None;
            }
            path.push(next);
            at = next;
        }
        Some(path)
    }

    /// Every alive node routes to exactly the nodes it can truly reach, loop-free,
    /// over up links only.
    pub fn converged(&self) -> bool {
        (0..self.nodes.len()).filter(|&i| self.alive[i]).all(|i| {
            let reachable = self.truly_reachable(i);
            let routed: BTreeSet<usize> = self.nodes[i]
                .routes()
                .iter()
                .map(|(d, _)| self.index(d))
                .collect();
            let expected: BTreeSet<usize> = reachable.iter().copied().filter(|&j| j != i).collect();
            routed == expected && expected.iter().all(|&j| self.walk(i, j).is_some())
        })
    }
}

/// A converged triangle whose 0-2 link flapped until node 0 damped it.
pub fn damped_triangle() -> Mesh {
    let ms = Duration::from_millis;
    let mut mesh = Mesh::new(3, Config::default(), 8);
    mesh.connect(0, 1, ms(1));
    mesh.connect(1, 2, ms(1));
    mesh.connect(0, 2, ms(1));
    mesh.run_until(ms(2_000), Mesh::converged);
    for _ in 0..5 {
        mesh.cut(0, 2);
        mesh.run_for(ms(400));
        mesh.repair(0, 2);
        mesh.run_for(ms(400));
    }
    let damped = mesh
        .events
        .iter()
        .any(|(_, _, e)| matches!(e, Event::Healing(d) if d.kind == DecisionKind::Damp));
    assert!(damped, "flapping must trigger damping");
    mesh
}
