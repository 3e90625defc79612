//! `[bridge]`: how the CAP bridge routes public warnings to rooms, and which account it posts
//! as. It may sit in any policy file or in its own `bridge.toml` in the policy folder.
//!
//! ```toml
//! [bridge]
//! bot = "cap-bridge"                      # an [[account]] that is a member of every routed room
//!
//! [[bridge.route]]
//! room = "flood-ops"                      # alias of a room in this policy
//! min_severity = "Severe"                 # Extreme | Severe | Moderate | Minor | Unknown
//! min_urgency = "Expected"                # Immediate | Expected | Future | Past | Unknown
//! categories = ["Met", "Geo"]             # CAP categories; empty: any
//! events = ["Flood Warning"]              # CAP event names (case-insensitive); empty: any
//! senders = ["warnings@river.example"]    # CAP senders; empty: any
//! polygons = ["52.0,13.0 52.1,13.0 52.1,13.2 52.0,13.0"]   # CAP syntax: lat,lon pairs, closed
//! circles = ["52.05,13.1 5"]              # lat,lon radius_km
//! geocodes = ["AGS=091620000000"]         # valueName=value
//! ```
//!
//! A route without polygons, circles or geocodes takes alerts for any area.

use std::collections::BTreeSet;
use std::fmt;

use super::{Keyword, NodePolicy, RoomKind};
use crate::decode::{Obj, Reader};
use crate::diagnostics::{Diagnostic, Origin, Severity};

keyword_enum!(
    /// CAP `severity`, most severe first (so `a <= b` means at least as severe).
    CapSeverity { Extreme = "Extreme", Severe = "Severe", Moderate = "Moderate", Minor = "Minor", Unknown = "Unknown" }
);

keyword_enum!(
    /// CAP `urgency`, most urgent first.
    CapUrgency { Immediate = "Immediate", Expected = "Expected", Future = "Future", Past = "Past", Unknown = "Unknown" }
);

/// The CAP categories, spelled as CAP 1.2 spells them.
pub const CAP_CATEGORIES: &[&str] =
    &["Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env", "Transport", "Infra", "CBRNE", "Other"];

/// A WGS 84 point, latitude first as CAP writes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub lat: f64,
    pub lon: f64,
}

/// A circle: centre and radius in kilometres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoCircle {
    pub centre: GeoPoint,
    pub radius_km: f64,
}

/// `lat,lon`, in range.
pub fn parse_point(s: &str) -> Result<GeoPoint, String> {
    let (lat, lon) = s.split_once(',').ok_or_else(|| format!("a point is \"lat,lon\", found {s:?}"))?;
    let lat: f64 = lat.trim().parse().map_err(|_| format!("latitude {lat:?} is not a number"))?;
    let lon: f64 = lon.trim().parse().map_err(|_| format!("longitude {lon:?} is not a number"))?;
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return Err(format!("point {s:?} is outside -90..90 latitude / -180..180 longitude"));
    }
    Ok(GeoPoint { lat, lon })
}

/// A CAP polygon: space-separated `lat,lon` pairs, at least four, the first repeated last.
pub fn parse_polygon(text: &str) -> Result<Vec<GeoPoint>, String> {
    let points = text.split_whitespace().map(parse_point).collect::<Result<Vec<_>, _>>()?;
    if points.len() < 4 {
        return Err(format!("a polygon needs at least 4 points (the first repeated last), found {}", points.len()));
    }
    if points.first() != points.last() {
        return Err("a polygon must be closed: its last point must equal its first".into());
    }
    Ok(points)
}

/// A CAP circle: `lat,lon radius_km`.
pub fn parse_circle(text: &str) -> Result<GeoCircle, String> {
    let mut parts = text.split_whitespace();
    let (Some(centre), Some(radius), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("a circle is \"lat,lon radius_km\", found {:?}", text.trim()));
    };
    let centre = parse_point(centre)?;
    let radius_km: f64 = radius.parse().map_err(|_| format!("radius {radius:?} is not a number"))?;
    if !radius_km.is_finite() || radius_km < 0.0 {
        return Err(format!("radius {radius:?} must be zero or more kilometres"));
    }
    Ok(GeoCircle { centre, radius_km })
}

/// One `[[bridge.route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeRoute {
    pub room: String,
    pub min_severity: Option<CapSeverity>,
    pub min_urgency: Option<CapUrgency>,
    pub categories: Vec<String>,
    pub events: Vec<String>,
    pub senders: Vec<String>,
    pub polygons: Vec<Vec<GeoPoint>>,
    pub circles: Vec<GeoCircle>,
    /// `(valueName, value)`.
    pub geocodes: Vec<(String, String)>,
    pub origin: Origin,
}

impl BridgeRoute {
    /// Whether the route is limited to an area at all.
    pub fn has_area(&self) -> bool {
        !(self.polygons.is_empty() && self.circles.is_empty() && self.geocodes.is_empty())
    }
}

/// `[bridge]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BridgePolicy {
    /// Localpart of the account the bridge posts as.
    pub bot: Option<String>,
    pub routes: Vec<BridgeRoute>,
    pub origin: Origin,
}

// Floats never hold NaN here (parsing refuses non-finite values).
impl Eq for BridgeRoute {}
impl Eq for BridgePolicy {}

pub(super) fn decode(r: &mut Reader<'_>, root: &mut Obj<'_, '_>) -> BridgePolicy {
    let Some(mut t) = root.opt_table(r, "bridge") else { return BridgePolicy::default() };
    let bot = t.opt_str(r, "bot");
    let mut routes = Vec::new();
    for mut rt in t.tables(r, "route") {
        let room = rt.req_str(r, "room");
        let min_severity = rt.opt_keyword::<CapSeverity>(r, "min_severity");
        let min_urgency = rt.opt_keyword::<CapUrgency>(r, "min_urgency");
        let categories = rt.opt_str_list(r, "categories").unwrap_or_default();
        for c in &categories {
            if !CAP_CATEGORIES.contains(&c.as_str()) {
                let message = format!("unknown CAP category {c:?} (expected one of {})", CAP_CATEGORIES.join(", "));
                r.error(&rt.span_of("categories"), &rt.field_path("categories"), message);
            }
        }
        let events = rt.opt_str_list(r, "events").unwrap_or_default();
        let senders = rt.opt_str_list(r, "senders").unwrap_or_default();
        let polygons = geometry(r, &mut rt, "polygons", parse_polygon);
        let circles = geometry(r, &mut rt, "circles", parse_circle);
        let geocodes = geometry(r, &mut rt, "geocodes", |s| match s.split_once('=') {
            Some((n, v)) if !n.trim().is_empty() && !v.trim().is_empty() => Ok((n.trim().into(), v.trim().into())),
            _ => Err(format!("a geocode is \"valueName=value\", found {s:?}")),
        });
        let origin = rt.finish(r);
        if let Some(room) = room {
            routes.push(BridgeRoute {
                room,
                min_severity,
                min_urgency,
                categories,
                events,
                senders,
                polygons,
                circles,
                geocodes,
                origin,
            });
        }
    }
    BridgePolicy { bot, routes, origin: t.finish(r) }
}

fn geometry<T>(
    r: &mut Reader<'_>,
    t: &mut Obj<'_, '_>,
    key: &'static str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    let mut out = Vec::new();
    for (i, text) in t.opt_str_list(r, key).unwrap_or_default().iter().enumerate() {
        match parse(text) {
            Ok(v) => out.push(v),
            Err(e) => r.error(&t.span_of(key), &format!("{}[{i}]", t.field_path(key)), e),
        }
    }
    out
}

/// References to the rest of the policy: routed rooms exist, the bot is an account that is a
/// member of each (so `policy apply` invites it) and may send the alarms it will post.
pub(super) fn validate(p: &NodePolicy, out: &mut Vec<Diagnostic>) {
    let b = &p.bridge;
    if b.origin.pos.is_none() {
        return;
    }
    let bot = match &b.bot {
        None => {
            if !b.routes.is_empty() {
                out.push(b.origin.diag(
                    Severity::Error,
                    "bot",
                    "bridge.bot".into(),
                    "routes need a bot account to post as".into(),
                ));
            }
            None
        }
        Some(bot) => match p.account(bot) {
            None => {
                let message = format!("bot {bot:?} is not an [[account]] in this policy");
                out.push(b.origin.diag(Severity::Error, "bot", "bridge.bot".into(), message));
                None
            }
            Some(_) => Some(bot.as_str()),
        },
    };
    if let Some(bot) = bot
        && !tocsin_events::AlarmLevel::ALL.iter().any(|(_, l)| p.may_send_alarm(bot, *l))
    {
        let message = format!("bot {bot:?} has no role that may send alarms, so the node would refuse its posts");
        out.push(b.origin.diag(Severity::Error, "bot", "bridge.bot".into(), message));
    }
    let mut seen = BTreeSet::new();
    for (i, route) in b.routes.iter().enumerate() {
        let path = format!("bridge.route[{i}].room");
        match p.room(&route.room) {
            None => {
                let message = format!("room {:?} is not a [[room]] alias in this policy", route.room);
                out.push(route.origin.diag(Severity::Error, "room", path, message));
            }
            Some(room) if room.kind == RoomKind::Space => {
                let message = format!("{:?} is a space; alarms go to rooms", route.room);
                out.push(route.origin.diag(Severity::Error, "room", path, message));
            }
            Some(room) => {
                if let Some(bot) = bot
                    && !p.members_of(room).iter().any(|m| m == bot)
                {
                    let message = format!(
                        "bot {bot:?} is not a member of room {:?}: add it to the room's members (or give it one of members_by_role)",
                        route.room
                    );
                    out.push(route.origin.diag(Severity::Error, "room", path, message));
                }
            }
        }
        if !seen.insert(route.room.as_str()) {
            let message = format!("room {:?} has more than one route; later routes add to the first", route.room);
            out.push(route.origin.diag(Severity::Warning, "room", format!("bridge.route[{i}].room"), message));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::parse_node_policy;

    const BASE: &str = r#"
[[role]]
name = "bridge"
power_level = 50
may_send_alarms = true

[[account]]
localpart = "cap-bridge"
roles = ["bridge"]

[[room]]
alias = "flood-ops"
name = "Flood"
members = ["cap-bridge"]

[[room]]
alias = "press"
name = "Press"
"#;

    fn errors(extra: &str) -> Vec<String> {
        let text = format!("{BASE}{extra}");
        match parse_node_policy(&text, Some(std::path::Path::new("p.toml"))) {
            Ok(_) => Vec::new(),
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn routes_parse_with_areas() {
        let text = format!(
            "{BASE}\n[bridge]\nbot = \"cap-bridge\"\n\n[[bridge.route]]\nroom = \"flood-ops\"\nmin_severity = \"Severe\"\ncategories = [\"Met\"]\npolygons = [\"52.0,13.0 52.0,13.4 52.2,13.4 52.0,13.0\"]\ncircles = [\"52.1,13.2 8\"]\ngeocodes = [\"AGS=031590001\"]\n"
        );
        let p = parse_node_policy(&text, None).unwrap().policy;
        let r = &p.bridge.routes[0];
        assert_eq!(p.bridge.bot.as_deref(), Some("cap-bridge"));
        assert_eq!(
            (r.min_severity, r.polygons[0].len(), r.circles[0].radius_km),
            (Some(super::CapSeverity::Severe), 4, 8.0)
        );
        assert_eq!(r.geocodes, vec![("AGS".to_owned(), "031590001".to_owned())]);
    }

    #[test]
    fn mistakes_are_named_with_file_line_and_field() {
        let e = errors(
            "\n[bridge]\nbot = \"cap-bridge\"\n\n[[bridge.route]]\nroom = \"flood-ops\"\npolygons = [\"52.0,13.0 52.0,13.4 52.2,13.4\"]\n",
        );
        assert!(
            e.iter().any(|d| d.starts_with("p.toml:25:")
                && d.contains("bridge.route[0].polygons[0]")
                && d.contains("at least 4 points")),
            "{e:?}"
        );
        let e = errors(
            "\n[bridge]\nbot = \"cap-bridge\"\n\n[[bridge.route]]\nroom = \"flood-ops\"\ncategories = [\"Weather\"]\n",
        );
        assert!(e.iter().any(|d| d.contains("unknown CAP category \"Weather\"")), "{e:?}");
        let e = errors("\n[bridge]\nbot = \"cap-bridge\"\n\n[[bridge.route]]\nroom = \"press\"\n");
        assert!(
            e.iter().any(|d| d.contains("bridge.route[0].room") && d.contains("not a member of room \"press\"")),
            "{e:?}"
        );
        let e = errors("\n[bridge]\nbot = \"nobody\"\n\n[[bridge.route]]\nroom = \"nowhere\"\n");
        assert!(e.iter().any(|d| d.contains("bot \"nobody\" is not an [[account]]")), "{e:?}");
        assert!(e.iter().any(|d| d.contains("room \"nowhere\" is not a [[room]]")), "{e:?}");
        let e = errors(
            "\n[bridge]\nbot = \"cap-bridge\"\n\n[[bridge.route]]\nroom = \"flood-ops\"\nmin_severity = \"Huge\"\n",
        );
        assert!(e.iter().any(|d| d.contains("min_severity")), "{e:?}");
    }
}
