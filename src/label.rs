//! Closed label sets: the values an audit record (and a metric) may carry.
//!
//! A label set is an enum whose variants spell as fixed kebab-case strings: the verdict, the
//! mode, the intent, the reason, the side of a failure. [`labels!`] declares one from a single
//! list of `Variant => "spelling"`, so the list of every value, each spelling and the parse
//! back can never disagree, and a label compares equal to its spelling (`rec.reason ==
//! "metadata"`).
//!
//! No serde here: the labels stay plain values (the policy that makes most of them is pure),
//! and the audit record says how it writes them (`audit::outcome::as_label`).

/// A closed set of labels, each with one fixed spelling.
pub trait Label: Copy + Eq + std::fmt::Debug + 'static {
    /// Every value, in declaration order.
    fn all() -> Vec<Self>;

    /// The spelling, in audit records and metric labels.
    fn as_str(self) -> &'static str;

    /// The value spelled `s`, if any.
    fn parse(s: &str) -> Option<Self> {
        Self::all().into_iter().find(|l| l.as_str() == s)
    }
}

/// Declare a label set: an enum, its `ALL` values and `as_str`, and the [`Label`], `Display`
/// and `PartialEq<&str>` impls.
///
/// ```ignore
/// labels! {
///     /// Allow or deny.
///     pub enum Verdict {
///         /// The flow may go.
///         Allow => "allow",
///         Deny => "deny",
///     }
/// }
/// ```
macro_rules! labels {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident => $text:literal
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant,
            )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Label for audit records and metrics.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl $crate::label::Label for $name {
            fn all() -> Vec<Self> {
                $name::ALL.to_vec()
            }

            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }

        $crate::label::label_traits!($name);
    };
}

/// `Display` and comparison with its spelling, for a type with an inherent
/// `as_str(self) -> &'static str`.
macro_rules! label_traits {
    ($name:ty) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

pub(crate) use {label_traits, labels};

/// Check a label set is closed and well spelled: every value listed once, every spelling
/// distinct and parsed back to its value, and nothing else parsed.
#[cfg(test)]
pub(crate) fn assert_closed<T: Label>() {
    let all = T::all();
    assert!(!all.is_empty());
    let mut seen = std::collections::HashSet::new();
    for v in &all {
        assert!(
            seen.insert(v.as_str()),
            "{v:?}: spelling {:?} twice",
            v.as_str()
        );
        assert_eq!(T::parse(v.as_str()), Some(*v), "{v:?} does not parse back");
        assert_eq!(
            all.iter().filter(|w| *w == v).count(),
            1,
            "{v:?} listed twice"
        );
    }
    assert_eq!(T::parse("no-such-label"), None);
}
