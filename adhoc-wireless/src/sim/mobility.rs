//! Where nodes are: fixed points, random waypoint, or an explicit piecewise-linear path.
//!
//! Positions use only `+ - * /` and `sqrt` on `f64`, which IEEE 754 rounds exactly, so a path
//! is the same on every platform (no `sin`/`cos`, whose results vary between math libraries).

use std::time::Duration;

use super::rng::Rng;
use super::time::{SimTime, micros_of_secs};

/// A position in metres.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Point {
    /// East, metres.
    pub x: f64,
    /// North, metres.
    pub y: f64,
}

impl Point {
    /// The point `(x, y)`.
    pub const fn new(x: f64, y: f64) -> Point {
        Point { x, y }
    }

    /// The squared distance to `other`.
    pub fn distance2(&self, other: &Point) -> f64 {
        let dx = self.x - other.x;
        let dy = self.y - other.y;
        dx * dx + dy * dy
    }

    /// The distance to `other`.
    pub fn distance(&self, other: &Point) -> f64 {
        self.distance2(other).sqrt()
    }

    fn lerp(&self, to: &Point, f: f64) -> Point {
        Point {
            x: self.x + (to.x - self.x) * f,
            y: self.y + (to.y - self.y) * f,
        }
    }
}

/// The random waypoint model: start at a uniform random point of the area, walk in a straight
/// line to another uniform random point at a speed drawn uniformly from `speed`, wait a time
/// drawn uniformly from `pause`, and again. (As The ONE's `RandomWaypoint`; its first leg
/// starts at time zero, without a wait.)
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RandomWaypoint {
    /// The area's width (x from 0), metres.
    pub width: f64,
    /// The area's height (y from 0), metres.
    pub height: f64,
    /// Slowest speed, metres per second (greater than zero).
    pub speed_min: f64,
    /// Fastest speed, metres per second.
    pub speed_max: f64,
    /// Shortest wait at a waypoint.
    pub pause_min: Duration,
    /// Longest wait at a waypoint.
    pub pause_max: Duration,
}

impl RandomWaypoint {
    /// Random waypoint over `width` × `height` metres, speeds in `speed` (m/s), waits in
    /// `pause`.
    pub fn new(
        width: f64,
        height: f64,
        speed: (f64, f64),
        pause: (Duration, Duration),
    ) -> RandomWaypoint {
        RandomWaypoint {
            width,
            height,
            speed_min: speed.0,
            speed_max: speed.1,
            pause_min: pause.0,
            pause_max: pause.1,
        }
    }

    /// The classic Epidemic vs Spray-and-Wait scenario of The ONE: 2000 × 2000 m, 0.5–1.5 m/s,
    /// waits of 0–120 s.
    pub fn the_one() -> RandomWaypoint {
        RandomWaypoint::new(
            2000.0,
            2000.0,
            (0.5, 1.5),
            (Duration::ZERO, Duration::from_secs(120)),
        )
    }

    pub(crate) fn is_valid(&self) -> bool {
        self.width.is_finite()
            && self.height.is_finite()
            && self.width >= 0.0
            && self.height >= 0.0
            && self.speed_min.is_finite()
            && self.speed_max.is_finite()
            && self.speed_min > 0.0
            && self.speed_max >= self.speed_min
            && self.pause_max >= self.pause_min
    }

    fn point(&self, rng: &mut Rng) -> Point {
        Point {
            x: rng.f64() * self.width,
            y: rng.f64() * self.height,
        }
    }
}

/// How a node moves.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Mobility {
    /// Stays at a point.
    Static(Point),
    /// Random waypoint (its draws come from the node's own random stream: see the module docs
    /// of [`sim`](super)).
    RandomWaypoint(RandomWaypoint),
    /// Piecewise-linear through `(time, point)` keyframes (sorted by time): at the first point
    /// before the first time, at the last after the last.
    Path(Vec<(SimTime, Point)>),
}

impl Mobility {
    pub(crate) fn check(&self) -> crate::error::Result<()> {
        let finite = |p: &Point| p.x.is_finite() && p.y.is_finite();
        let ok = match self {
            Mobility::Static(p) => finite(p),
            Mobility::RandomWaypoint(m) => m.is_valid(),
            Mobility::Path(keys) => keys.iter().all(|(_, p)| finite(p)),
        };
        if ok {
            Ok(())
        } else {
            Err(crate::error::Error::InvalidConfig(format!(
                "mobility {self:?}: points must be finite, speeds positive and ranges ordered"
            )))
        }
    }
}

/// A node's motion, advanced as time goes on (times never go back).
#[derive(Debug, Clone)]
pub(crate) struct Mover {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Static(Point),
    Waypoint {
        model: RandomWaypoint,
        rng: Rng,
        from: Point,
        to: Point,
        depart: SimTime,
        arrive: SimTime,
        leave: SimTime,
    },
    Path {
        keys: Vec<(SimTime, Point)>,
        at: usize,
    },
}

impl Mover {
    /// A mover starting at `now` (random draws from `rng`, the node's own stream).
    pub(crate) fn new(mobility: Mobility, now: SimTime, mut rng: Rng) -> Mover {
        let kind = match mobility {
            Mobility::Static(p) => Kind::Static(p),
            Mobility::RandomWaypoint(model) => {
                let from = model.point(&mut rng);
                let mut kind = Kind::Waypoint {
                    to: from,
                    from,
                    depart: now,
                    arrive: now,
                    leave: now,
                    model,
                    rng,
                };
                if let Kind::Waypoint {
                    model,
                    rng,
                    from,
                    to,
                    depart,
                    arrive,
                    leave,
                } = &mut kind
                {
                    next_leg(model, rng, from, to, depart, arrive, leave, now);
                }
                kind
            }
            Mobility::Path(mut keys) => {
                keys.sort_by_key(|(t, _)| *t);
                if keys.is_empty() {
                    Kind::Static(Point::default())
                } else {
                    Kind::Path { keys, at: 0 }
                }
            }
        };
        Mover { kind }
    }

    /// Where the node is at `now` (not before the last time asked).
    pub(crate) fn position(&mut self, now: SimTime) -> Point {
        match &mut self.kind {
            Kind::Static(p) => *p,
            Kind::Waypoint {
                model,
                rng,
                from,
                to,
                depart,
                arrive,
                leave,
            } => {
                while now >= *leave {
                    let start = *leave;
                    let before = *leave;
                    next_leg(model, rng, from, to, depart, arrive, leave, start);
                    if *leave <= before {
                        // A zero-length leg and a zero wait: stay (cannot loop forever).
                        break;
                    }
                }
                if now >= *arrive {
                    *to
                } else {
                    let span = arrive.as_micros() - depart.as_micros();
                    let done = now.as_micros().saturating_sub(depart.as_micros());
                    from.lerp(to, done as f64 / span as f64)
                }
            }
            Kind::Path { keys, at } => {
                while *at + 1 < keys.len() && keys.get(*at + 1).is_some_and(|(t, _)| *t <= now) {
                    *at += 1;
                }
                match (keys.get(*at), keys.get(*at + 1)) {
                    (Some((t0, p0)), Some((t1, p1))) if now > *t0 => {
                        let span = t1.as_micros() - t0.as_micros();
                        let done = now.as_micros() - t0.as_micros();
                        p0.lerp(p1, done as f64 / span as f64)
                    }
                    (Some((_, p0)), _) => *p0,
                    (None, _) => Point::default(),
                }
            }
        }
    }

    /// Whether the node stays where it is from `now` on.
    pub(crate) fn settled(&self, now: SimTime) -> bool {
        match &self.kind {
            Kind::Static(_) => true,
            Kind::Waypoint { .. } => false,
            Kind::Path { keys, .. } => keys.last().is_none_or(|(t, _)| *t <= now),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn next_leg(
    model: &RandomWaypoint,
    rng: &mut Rng,
    from: &mut Point,
    to: &mut Point,
    depart: &mut SimTime,
    arrive: &mut SimTime,
    leave: &mut SimTime,
    start: SimTime,
) {
    *from = *to;
    *to = model.point(rng);
    let speed = rng.range_f64(model.speed_min, model.speed_max);
    let secs = if speed > 0.0 {
        from.distance(to) / speed
    } else {
        0.0
    };
    *depart = start;
    *arrive = start.plus_micros(micros_of_secs(secs));
    let pause = rng.range_u64(
        super::time::duration_micros(model.pause_min),
        super::time::duration_micros(model.pause_max),
    );
    *leave = arrive.plus_micros(pause);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_followed() {
        let mut m = Mover::new(
            Mobility::Path(vec![
                (SimTime::from_secs(10), Point::new(100.0, 0.0)),
                (SimTime::ZERO, Point::new(0.0, 0.0)),
            ]),
            SimTime::ZERO,
            Rng::new(1),
        );
        assert_eq!(m.position(SimTime::ZERO), Point::new(0.0, 0.0));
        assert_eq!(m.position(SimTime::from_secs(5)), Point::new(50.0, 0.0));
        assert!(!m.settled(SimTime::from_secs(5)));
        assert_eq!(m.position(SimTime::from_secs(20)), Point::new(100.0, 0.0));
        assert!(m.settled(SimTime::from_secs(20)));
    }

    #[test]
    fn random_waypoint_stays_in_the_area_at_its_speeds() {
        let model = RandomWaypoint::new(
            100.0,
            50.0,
            (1.0, 2.0),
            (Duration::ZERO, Duration::from_secs(5)),
        );
        let mut m = Mover::new(Mobility::RandomWaypoint(model), SimTime::ZERO, Rng::new(3));
        let mut last = m.position(SimTime::ZERO);
        for step in 1..20_000u64 {
            let p = m.position(SimTime::from_millis(step * 100));
            assert!((0.0..=100.0).contains(&p.x) && (0.0..=50.0).contains(&p.y));
            // At most 2 m/s over 0.1 s (plus rounding).
            assert!(p.distance(&last) <= 0.2 + 1e-6, "{p:?} {last:?}");
            last = p;
        }
    }
}
