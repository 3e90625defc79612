//! `timestamp_to_event`: the event of a room closest to a point in time, in one direction, among
//! those the reader may see. Jump-to-date in clients, and a joining server finding where to
//! start.

use super::{Pdu, Rooms, visibility::ReadAccess};
use crate::error::Result;
use ruma::RoomId;

/// Events read on each side of the point found by the search, looking for one the reader may
/// see: bounds the work of a request in a room whose history is mostly hidden from the reader.
const WINDOW: usize = 200;

impl Rooms {
    /// The first event at or after `ts` (`forward`), or the last at or before it, that `access`
    /// may see. Timestamps follow the timeline's order closely but not strictly (clocks of
    /// other servers), so a binary search over positions finds the region and a bounded scan
    /// settles it.
    pub fn event_at_ts(
        &self,
        room_id: &RoomId,
        ts: u64,
        forward: bool,
        access: &ReadAccess,
    ) -> Result<Option<(u64, Pdu)>> {
        let ts_of = |pdu: &Pdu| u64::from(pdu.origin_server_ts.0);
        let Some((first, _)) = self.paginate(room_id, 0, false, 1)?.pop() else { return Ok(None) };
        let Some((last, _)) = self.paginate(room_id, u64::MAX, true, 1)?.pop() else { return Ok(None) };
        // The first position whose event is at or after `ts`.
        let (mut lo, mut hi) = (first, last.saturating_add(1));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.paginate(room_id, mid.saturating_sub(1), false, 1)?.pop() {
                Some((pos, pdu)) if pos < hi => {
                    if ts_of(&pdu) < ts {
                        lo = pos + 1;
                    } else {
                        hi = mid;
                    }
                }
                _ => hi = mid,
            }
        }
        let visible = |(pos, pdu): &(u64, Pdu)| access.may_see(*pos, pdu);
        if forward {
            let after = self.paginate(room_id, lo.saturating_sub(1), false, WINDOW)?;
            return Ok(after.into_iter().find(|e| ts_of(&e.1) >= ts && visible(e)));
        }
        // Events exactly at `ts` start at the boundary; the last of them is the nearest. Before
        // the boundary, everything is earlier.
        let at = self.paginate(room_id, lo.saturating_sub(1), false, WINDOW)?;
        if let Some(exact) = at.into_iter().take_while(|e| ts_of(&e.1) == ts).filter(|e| visible(e)).last() {
            return Ok(Some(exact));
        }
        let before = self.paginate(room_id, lo, true, WINDOW)?;
        Ok(before.into_iter().find(|e| ts_of(&e.1) <= ts && visible(e)))
    }
}
