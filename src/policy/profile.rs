//! Adequacy profiles: versioned data files that say which class each jurisdiction is in.
//!
//! Law lives in `config/profiles/*.toml`, never in code. A profile compiles to a flat array
//! from jurisdiction id to [`Class`], so classifying an address is one table lookup plus one
//! array index.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::jurisdiction::sources::line_of;
use crate::jurisdiction::{Hit, Jurisdiction, Lookup};

/// The embedded profiles, by name.
pub const BUILTIN: [(&str, &str); 2] = [
    (
        "uk-adequate",
        include_str!("../../config/profiles/uk-adequate.toml"),
    ),
    (
        "uk-only",
        include_str!("../../config/profiles/uk-only.toml"),
    ),
];

/// The default profile.
pub const DEFAULT_PROFILE: &str = "uk-adequate";

/// Where data may go, from strictest-to-allow to most restricted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// The home jurisdiction (GB).
    Home,
    /// Adequate: data may go there.
    Adequate,
    /// Adequate only for some recipients: needs a per-host attestation.
    Conditional,
    /// Not adequate.
    NotAdequate,
    /// Internal, metadata or reserved address space: decided by policy rules, not by country.
    Internal,
    /// No source knows the address: fails closed.
    Unknown,
}

impl Class {
    /// Label for logs, audit records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Home => "home",
            Class::Adequate => "adequate",
            Class::Conditional => "conditional",
            Class::NotAdequate => "not-adequate",
            Class::Internal => "internal",
            Class::Unknown => "unknown",
        }
    }

    /// Strictness for combining two answers (6to4, Teredo): higher is stricter.
    pub fn strictness(self) -> u8 {
        match self {
            Class::Home => 0,
            Class::Adequate => 1,
            Class::Conditional => 2,
            Class::Internal => 3,
            Class::NotAdequate => 4,
            Class::Unknown => 5,
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused profile: file, line (where known) and reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {reason}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ProfileError {
    /// File or profile name.
    pub file: String,
    /// 1-based line.
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProfile {
    profile: FileHeader,
    #[serde(default, rename = "jurisdiction")]
    jurisdictions: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHeader {
    name: String,
    version: String,
    description: String,
    default_class: toml::Spanned<Class>,
}

/// One profile entry, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// ISO 3166-1 alpha-2 code.
    pub code: String,
    /// Its class.
    pub class: Class,
    /// What the adequacy covers.
    pub scope: String,
    /// The legal instrument.
    pub legal_basis: String,
    /// When the basis took effect (YYYY-MM-DD).
    pub in_force: String,
    /// Where the basis is published.
    pub source: String,
    /// When this entry was last checked (YYYY-MM-DD).
    pub last_verified: String,
}

#[derive(Deserialize)]
struct SpannedEntry {
    code: toml::Spanned<String>,
    #[serde(flatten)]
    _rest: toml::Table,
}

#[derive(Deserialize)]
struct SpannedFile {
    #[serde(default, rename = "jurisdiction")]
    jurisdictions: Vec<SpannedEntry>,
}

/// A compiled profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Profile name (`uk-adequate`).
    pub name: Arc<str>,
    /// Data version of the file.
    pub version: String,
    /// What it is.
    pub description: String,
    /// Class of countries not listed.
    pub default_class: Class,
    /// The entries, as written.
    pub entries: Vec<Entry>,
    classes: Box<[Class]>,
}

impl Profile {
    /// A built-in profile by name, or a profile file by path (anything ending in `.toml`).
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(text, &format!("config/profiles/{name_or_path}.toml"));
        }
        if name_or_path.ends_with(".toml") {
            let text =
                std::fs::read_to_string(Path::new(name_or_path)).map_err(|e| ProfileError {
                    file: name_or_path.to_string(),
                    line: None,
                    reason: e.to_string(),
                })?;
            return Self::parse(&text, name_or_path);
        }
        Err(ProfileError {
            file: name_or_path.to_string(),
            line: None,
            reason: format!(
                "no such profile (built in: {}; or give a path ending in .toml)",
                BUILTIN.map(|b| b.0).join(", ")
            ),
        })
    }

    /// Parse and compile a profile; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Profile, ProfileError> {
        let fail = |line: Option<usize>, reason: String| ProfileError {
            file: file.to_string(),
            line,
            reason,
        };
        let doc: FileProfile = toml::from_str(text).map_err(|e| {
            fail(
                e.span().map(|s| line_of(text, s.start)),
                e.message().to_string(),
            )
        })?;
        let spans: SpannedFile =
            toml::from_str(text).map_err(|e| fail(None, e.message().to_string()))?;
        let default_class = *doc.profile.default_class.get_ref();
        if matches!(default_class, Class::Internal | Class::Unknown) {
            return Err(fail(
                Some(line_of(text, doc.profile.default_class.span().start)),
                "default_class must be home, adequate, conditional or not-adequate".into(),
            ));
        }
        let mut classes = vec![default_class; Jurisdiction::COUNT];
        let mut seen = vec![false; Jurisdiction::COUNT];
        // `global` (anycast / edge cloud ranges) when the profile does not list it: never more
        // open than conditional.
        classes[Jurisdiction::GLOBAL.index()] =
            if default_class.strictness() >= Class::Conditional.strictness() {
                default_class
            } else {
                Class::Conditional
            };
        for (i, e) in doc.jurisdictions.iter().enumerate() {
            let line = spans
                .jurisdictions
                .get(i)
                .map(|s| line_of(text, s.code.span().start));
            let j = Jurisdiction::from_code(&e.code)
                .filter(|j| {
                    (j.is_country() && e.code.len() == 2 && e.code == e.code.to_uppercase())
                        || (*j == Jurisdiction::GLOBAL && e.code == "global")
                })
                .ok_or_else(|| {
                    fail(
                        line,
                        format!(
                            "unknown jurisdiction code '{}' (expected an upper-case ISO 3166-1 alpha-2 code or global; the UK is GB, Greece is GR)",
                            e.code
                        ),
                    )
                })?;
            if matches!(e.class, Class::Internal | Class::Unknown) {
                return Err(fail(
                    line,
                    format!(
                        "{}: class must be home, adequate, conditional or not-adequate",
                        e.code
                    ),
                ));
            }
            if std::mem::replace(&mut seen[j.index()], true) {
                return Err(fail(line, format!("{} is listed twice", e.code)));
            }
            classes[j.index()] = e.class;
        }
        for j in [
            Jurisdiction::INTERNAL,
            Jurisdiction::METADATA,
            Jurisdiction::RESERVED,
        ] {
            classes[j.index()] = Class::Internal;
        }
        classes[Jurisdiction::UNKNOWN.index()] = Class::Unknown;
        Ok(Profile {
            name: doc.profile.name.into(),
            version: doc.profile.version,
            description: doc.profile.description,
            default_class,
            entries: doc.jurisdictions,
            classes: classes.into_boxed_slice(),
        })
    }

    /// The class of a jurisdiction: one array index.
    #[inline]
    pub fn class_of(&self, j: Jurisdiction) -> Class {
        self.classes
            .get(j.index())
            .copied()
            .unwrap_or(Class::Unknown)
    }

    /// The class of a lookup and the answer that decided it: for 6to4 and Teredo, the stricter
    /// of the embedded address and the relay.
    pub fn classify(&self, lookup: &Lookup) -> (Class, Hit) {
        let mut best = (self.class_of(lookup.jurisdiction()), lookup.hit());
        if let Some(relay) = lookup.relay() {
            let c = self.class_of(relay.jurisdiction);
            if Self::decides_over((c, &relay), (best.0, &best.1)) {
                best = (c, relay);
            }
        }
        best
    }

    /// Of two answers for one address (6to4, Teredo), does `a` decide over `b`? A safety
    /// jurisdiction (`metadata` over `reserved` over `internal`) always decides, ahead of
    /// `not-adequate` or `unknown`: the safety layer must see it. Otherwise the stricter class.
    pub fn decides_over(a: (Class, &Hit), b: (Class, &Hit)) -> bool {
        let (ra, rb) = (
            a.1.jurisdiction.safety_rank(),
            b.1.jurisdiction.safety_rank(),
        );
        if ra != rb {
            return ra > rb;
        }
        a.0.strictness() > b.0.strictness()
    }

    /// The entry for a jurisdiction, if the profile lists it.
    pub fn entry(&self, j: Jurisdiction) -> Option<&Entry> {
        self.entries.iter().find(|e| e.code == j.code())
    }
}
