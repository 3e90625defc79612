//! The password policy: the shortest password the node accepts (`password_min_length`), for
//! registration, password changes, admin resets and `tocsin-node user add`.

use crate::error::{Error, Result};

/// `M_WEAK_PASSWORD` when `password` has fewer than `min_length` characters.
pub fn check(min_length: usize, password: &str) -> Result<()> {
    if password.chars().count() < min_length {
        return Err(Error::WeakPassword(format!("the password must have at least {min_length} characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_characters_not_bytes() {
        assert!(super::check(8, "1234567").is_err());
        assert!(super::check(8, "12345678").is_ok());
        // Eight characters, sixteen bytes.
        assert!(super::check(8, "éééééééé").is_ok());
        assert!(super::check(9, "éééééééé").is_err());
    }
}
