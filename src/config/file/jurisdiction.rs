//! `[jurisdiction]`: the data sources of the table and the adequacy profile.

use std::time::Duration;

use toml::Spanned;

use super::raw::FileJurisdiction;
use super::{Compiler, Res, parse_duration};
use crate::config::ConfigError;
use crate::jurisdiction::load::TableSources;
use crate::policy::Profile;
use crate::policy::profile::{BUILTIN, DEFAULT_PROFILE};

impl Compiler<'_> {
    pub(super) fn jurisdiction(&self, raw: FileJurisdiction) -> Res<(TableSources, Profile)> {
        let geoip = raw
            .geoip
            .as_ref()
            .map(|g| self.path(g, "jurisdiction.geoip"))
            .transpose()?;
        let mut overrides = Vec::new();
        for (j, o) in raw.overrides.iter().flatten().enumerate() {
            let key = format!("jurisdiction.overrides[{j}]");
            let path = self.path(o, &key)?;
            if !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("csv" | "toml")
            ) {
                return Err(self.bad(o, key, "overrides file must end in .csv or .toml"));
            }
            overrides.push(path);
        }
        let aws_ranges = raw
            .aws_ranges
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, a)| self.path(a, &format!("jurisdiction.aws_ranges[{j}]")))
            .collect::<Res<Vec<_>>>()?;
        let cloud_dir = match raw.cloud_dir.as_ref() {
            Some(d) => {
                let path = self.path(d, "jurisdiction.cloud_dir")?;
                if !path.is_dir() {
                    return Err(self.bad(
                        d,
                        "jurisdiction.cloud_dir",
                        "not a directory (create it with `residency-proxy update-ranges --out DIR`)",
                    ));
                }
                Some(path)
            }
            None => None,
        };
        let cloud_refresh = match raw.cloud_refresh.as_ref() {
            None => None,
            Some(v) if v.get_ref() == "off" => None,
            Some(v) => {
                const KEY: &str = "jurisdiction.cloud_refresh";
                // The feeds change a few times a day at most: no need to ask more often.
                const MIN_CLOUD_REFRESH: Duration = Duration::from_secs(600);
                let every = parse_duration(v.get_ref())
                    .map_err(|r| self.bad(v, KEY, format!("{r}, or \"off\"")))?;
                if every < MIN_CLOUD_REFRESH {
                    return Err(self.bad(v, KEY, "must be at least 10m"));
                }
                if cloud_dir.is_none() {
                    return Err(self.bad(
                        v,
                        KEY,
                        "needs jurisdiction.cloud_dir: the directory the refreshed feeds are written to",
                    ));
                }
                Some(every)
            }
        };
        let profile = self.profile(raw.profile.as_ref())?;
        Ok((
            TableSources {
                geoip,
                overrides,
                aws_ranges,
                cloud_ranges: raw.cloud_ranges.unwrap_or(true),
                cloud_dir,
                cloud_refresh,
            },
            profile,
        ))
    }

    /// Load the profile: a built-in name as is, a `.toml` path resolved against the base.
    fn profile(&self, raw: Option<&Spanned<String>>) -> Res<Profile> {
        const KEY: &str = "jurisdiction.profile";
        let Some(raw) = raw else {
            return Profile::load(DEFAULT_PROFILE).map_err(|e| {
                ConfigError::new(self.source, KEY, format!("cannot load profile: {e}"))
                    .with_value(DEFAULT_PROFILE)
            });
        };
        let written = raw.get_ref();
        let arg = if BUILTIN.iter().any(|(n, _)| n == written) || !written.ends_with(".toml") {
            written.clone()
        } else {
            let path = self.path(raw, KEY)?;
            path.to_str()
                .ok_or_else(|| self.bad(raw, KEY, "profile path is not valid UTF-8"))?
                .to_string()
        };
        Profile::load(&arg).map_err(|e| {
            let reason = match e.line {
                None if !written.ends_with(".toml") => e.reason,
                None => format!("cannot load profile {arg}: {}", e.reason),
                Some(_) => format!("cannot load profile: {e}"),
            };
            self.bad(raw, KEY, reason)
        })
    }
}
