//! Paging parameters shared by the list endpoints that page by stream position
//! (`/notifications`, `/threads`): the `from` token and the page size.

use ruma::UInt;

use crate::error::{Error, Result};

/// The page size when the client gives none, and the most one page holds.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

/// The position a `from` token names (the tokens these endpoints hand out are positions).
pub fn from_position(from: Option<&str>) -> Result<Option<u64>> {
    from.map(|f| f.parse::<u64>().map_err(|_| Error::invalid_param("`from` is not a token this node gave"))).transpose()
}

/// The page size: the client's `limit` within 1..=100, 20 without one.
pub fn limit(limit: Option<UInt>) -> usize {
    limit.map_or(DEFAULT_LIMIT, |l| usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT)).clamp(1, MAX_LIMIT)
}
