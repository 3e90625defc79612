//! Which rooms an alert goes to: the policy's `[[bridge.route]]` rules, by severity, urgency,
//! category, event, sender and area. Areas are intersected with the `geo` crate; a circle is
//! approximated by a 64-sided polygon (accurate to well under 1 % of its radius).

use geo::{Coord, Intersects, LineString, Polygon};
use tocsin_policies::{BridgeRoute, GeoCircle, GeoPoint};

use crate::cap::{Alert, Info, Keyword, Severity, Urgency};

fn coord(p: &GeoPoint) -> Coord<f64> {
    Coord { x: p.lon, y: p.lat }
}

fn polygon(points: &[GeoPoint]) -> Polygon<f64> {
    Polygon::new(LineString::from(points.iter().map(coord).collect::<Vec<_>>()), Vec::new())
}

fn circle(c: &GeoCircle) -> Polygon<f64> {
    const SIDES: usize = 64;
    const KM_PER_DEG: f64 = 111.32;
    let dlat = c.radius_km / KM_PER_DEG;
    let dlon = c.radius_km / (KM_PER_DEG * c.centre.lat.to_radians().cos().max(1e-6));
    let ring: Vec<Coord<f64>> = (0..=SIDES)
        .map(|i| {
            let a = std::f64::consts::TAU * (i % SIDES) as f64 / SIDES as f64;
            Coord { x: c.centre.lon + dlon * a.cos(), y: c.centre.lat + dlat * a.sin() }
        })
        .collect();
    Polygon::new(LineString::from(ring), Vec::new())
}

/// The shapes of a set of polygons and circles.
fn shapes<'a>(
    polygons: impl Iterator<Item = &'a Vec<GeoPoint>>,
    circles: impl Iterator<Item = &'a GeoCircle>,
) -> Vec<Polygon<f64>> {
    polygons.map(|p| polygon(p)).chain(circles.map(circle)).collect()
}

/// Whether an info's areas meet the route's area (always, for a route without one).
fn area_matches(route: &BridgeRoute, info: &Info) -> bool {
    if !route.has_area() {
        return true;
    }
    let geocode_hit = info
        .areas
        .iter()
        .flat_map(|a| &a.geocodes)
        .any(|g| route.geocodes.iter().any(|(name, value)| *name == g.value_name && *value == g.value));
    if geocode_hit {
        return true;
    }
    let room = shapes(route.polygons.iter(), route.circles.iter());
    let alert = shapes(info.areas.iter().flat_map(|a| &a.polygons), info.areas.iter().flat_map(|a| &a.circles));
    alert.iter().any(|a| room.iter().any(|r| a.intersects(r)))
}

fn info_matches(route: &BridgeRoute, alert: &Alert, info: &Info) -> bool {
    let severity_ok = route.min_severity.is_none_or(|min| {
        Severity::from_text(min.as_str()).is_some_and(|min| info.severity != Severity::Unknown && info.severity <= min)
    });
    let urgency_ok = route.min_urgency.is_none_or(|min| {
        Urgency::from_text(min.as_str()).is_some_and(|min| info.urgency != Urgency::Unknown && info.urgency <= min)
    });
    let category_ok = route.categories.is_empty()
        || info.categories.iter().any(|c| route.categories.iter().any(|r| r == c.as_text()));
    let event_ok = route.events.is_empty() || route.events.iter().any(|e| e.eq_ignore_ascii_case(&info.event));
    let sender_ok = route.senders.is_empty() || route.senders.contains(&alert.sender);
    severity_ok && urgency_ok && category_ok && event_ok && sender_ok && area_matches(route, info)
}

/// The rooms (aliases, in route order, without repeats) an alert goes to.
pub fn rooms_for(routes: &[BridgeRoute], alert: &Alert) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for route in routes {
        if out.contains(&route.room) {
            continue;
        }
        if alert.infos.iter().any(|info| info_matches(route, alert, info)) {
            out.push(route.room.clone());
        }
    }
    out
}
