//! The keyword values of CAP 1.2, each listed once with its exact spelling.

use std::fmt;

/// Common behaviour of keyword enums: their spellings, for parsing and error messages.
pub trait Keyword: Sized + Copy + 'static {
    const ALL: &'static [(&'static str, Self)];
    const ELEMENT: &'static str;

    fn from_text(text: &str) -> Option<Self> {
        Self::ALL.iter().find(|(k, _)| *k == text).map(|(_, v)| *v)
    }

    fn as_text(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::ALL.iter().find(|(_, v)| *v == self).map(|(k, _)| *k).unwrap_or("")
    }

    fn expected() -> String {
        Self::ALL.iter().map(|(k, _)| format!("\"{k}\"")).collect::<Vec<_>>().join(", ")
    }
}

macro_rules! keywords {
    ($(#[$m:meta])* $name:ident, $element:literal { $($variant:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($variant),+ }

        impl Keyword for $name {
            const ALL: &'static [(&'static str, Self)] = &[$((stringify!($variant), $name::$variant)),+];
            const ELEMENT: &'static str = $element;
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_text())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::from_text(s).ok_or_else(|| format!("{} must be one of {}, found {s:?}", $element, Self::expected()))
            }
        }
    };
}

keywords!(Status, "status" { Actual, Exercise, System, Test, Draft });
keywords!(MsgType, "msgType" { Alert, Update, Cancel, Ack, Error });
keywords!(Scope, "scope" { Public, Restricted, Private });
keywords!(Category, "category" { Geo, Met, Safety, Security, Rescue, Fire, Health, Env, Transport, Infra, CBRNE, Other });
keywords!(ResponseType, "responseType" { Shelter, Evacuate, Prepare, Execute, Avoid, Monitor, Assess, AllClear, None });
keywords!(
    /// Declared most urgent first, so `a <= b` means "at least as urgent".
    Urgency, "urgency" { Immediate, Expected, Future, Past, Unknown }
);
keywords!(
    /// Declared most severe first, so `a <= b` means "at least as severe".
    Severity, "severity" { Extreme, Severe, Moderate, Minor, Unknown }
);
keywords!(Certainty, "certainty" { Observed, Likely, Possible, Unlikely, Unknown });
