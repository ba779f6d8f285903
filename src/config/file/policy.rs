//! `[policy]`: the default for unknown jurisdictions, reachable internal networks, rules and
//! attestations.

use std::sync::Arc;

use toml::Spanned;

use super::raw::{FilePolicy, FileRule};
use super::{Compiler, Res};
use crate::config::ListenerConfig;
use crate::jurisdiction::Jurisdiction;
use crate::policy::{Action, Attestation, Class, Policy, Rule};

impl Compiler<'_> {
    pub(super) fn policy(&self, raw: FilePolicy, listeners: &[ListenerConfig]) -> Res<Policy> {
        let unknown = match &raw.unknown {
            None => Action::Deny,
            Some(u) => self.action(u, "policy.unknown")?,
        };
        let internal_allowed = raw
            .internal_allowed
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, c)| self.cidr(c, &format!("policy.internal_allowed[{j}]")))
            .collect::<Res<Vec<_>>>()?;
        let mut rules: Vec<Rule> = Vec::new();
        for (i, r) in raw.rule.iter().flatten().enumerate() {
            let rule = self.rule(r, i, listeners)?;
            if let Some(j) = rules.iter().position(|o| o.id == rule.id) {
                return Err(self.bad(
                    &r.id,
                    format!("policy.rule[{i}].id"),
                    format!("duplicate rule id (already used by policy.rule[{j}])"),
                ));
            }
            rules.push(rule);
        }
        let attestations = raw
            .attestation
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, a)| {
                let key = |k: &str| format!("policy.attestation[{i}].{k}");
                Ok(Attestation {
                    host: self.host(&a.host, &key("host"))?,
                    organisation: self.non_empty(
                        &a.organisation,
                        &key("organisation"),
                        "organisation",
                    )?,
                    basis: self.non_empty(&a.basis, &key("basis"), "basis")?,
                })
            })
            .collect::<Res<Vec<_>>>()?;
        Ok(Policy {
            rules,
            attestations,
            internal_allowed,
            unknown,
        })
    }

    fn rule(&self, r: &FileRule, i: usize, listeners: &[ListenerConfig]) -> Res<Rule> {
        let key = |k: &str| format!("policy.rule[{i}].{k}");
        let item = |k: &str, j: usize| format!("policy.rule[{i}].{k}[{j}]");
        let id = self.non_empty(&r.id, &key("id"), "rule id")?;
        let action = self.action(&r.action, &key("action"))?;
        let mode = r
            .mode
            .as_ref()
            .map(|m| self.mode(m, &key("mode")))
            .transpose()?;
        let mut names = Vec::new();
        for (j, l) in self
            .list(r.listeners.as_ref(), &key("listeners"))?
            .iter()
            .enumerate()
        {
            if !listeners.iter().any(|c| c.name == *l.get_ref()) {
                let known: Vec<&str> = listeners.iter().map(|c| c.name.as_str()).collect();
                return Err(self.bad(
                    l,
                    item("listeners", j),
                    format!("no such listener (configured: {})", known.join(", ")),
                ));
            }
            names.push(l.get_ref().clone());
        }
        let clients = self
            .list(r.clients.as_ref(), &key("clients"))?
            .iter()
            .enumerate()
            .map(|(j, c)| self.cidr(c, &item("clients", j)))
            .collect::<Res<_>>()?;
        let hosts = self
            .list(r.hosts.as_ref(), &key("hosts"))?
            .iter()
            .enumerate()
            .map(|(j, h)| self.host(h, &item("hosts", j)))
            .collect::<Res<_>>()?;
        let ports = self
            .list(r.ports.as_ref(), &key("ports"))?
            .iter()
            .enumerate()
            .map(|(j, p)| self.port(p, &item("ports", j)))
            .collect::<Res<_>>()?;
        let classes = self
            .list(r.classes.as_ref(), &key("classes"))?
            .iter()
            .enumerate()
            .map(|(j, c)| self.class(c, &item("classes", j)))
            .collect::<Res<_>>()?;
        let jurisdictions = self
            .list(r.jurisdictions.as_ref(), &key("jurisdictions"))?
            .iter()
            .enumerate()
            .map(|(j, c)| {
                Jurisdiction::from_code(c.get_ref()).ok_or_else(|| {
                    self.bad(
                        c,
                        item("jurisdictions", j),
                        "unknown jurisdiction (expected an ISO 3166-1 alpha-2 code such as GB, or internal, metadata, reserved, unknown; the UK is GB, Greece is GR)",
                    )
                })
            })
            .collect::<Res<_>>()?;
        let destinations = self
            .list(r.destinations.as_ref(), &key("destinations"))?
            .iter()
            .enumerate()
            .map(|(j, c)| self.cidr(c, &item("destinations", j)))
            .collect::<Res<_>>()?;
        Ok(Rule {
            id: Arc::from(id),
            listeners: names,
            clients,
            hosts,
            ports,
            classes,
            jurisdictions,
            destinations,
            action,
            mode,
        })
    }

    fn class(&self, v: &Spanned<String>, key: &str) -> Res<Class> {
        const CLASSES: [Class; 6] = [
            Class::Home,
            Class::Adequate,
            Class::Conditional,
            Class::NotAdequate,
            Class::Internal,
            Class::Unknown,
        ];
        CLASSES
            .into_iter()
            .find(|c| c.as_str() == v.get_ref())
            .ok_or_else(|| {
                self.bad(
                    v,
                    key,
                    "unknown class (expected home, adequate, conditional, not-adequate, internal or unknown)",
                )
            })
    }
}
