//! `csr.conf.template` → `csr.conf`: the MicroK8s-compatible OpenSSL config that names the
//! server certificate's subject, SANs and extensions.
//!
//! The template is the user's file. We parse it (OpenSSL's NCONF syntax, minus variable
//! expansion and directives), reject what OpenSSL would misread or what cannot become a valid
//! certificate, and replace the `#MOREIPS` line with the host's addresses as `IP.n` lines
//! numbered from 3, skipping numbers the user already used. The rendered text must stay
//! acceptable to `openssl req -config`.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// The placeholder line replaced by the host's addresses.
pub const MOREIPS: &str = "#MOREIPS";
/// The section the issue and MicroK8s's tooling call the SAN list.
pub const ALT_NAMES: &str = "alt_names";
/// The extensions section the server certificate is signed with.
pub const V3_EXT: &str = "v3_ext";
/// First number given to a host address (`IP.1` is loopback, `IP.2` the service IP).
const FIRST_HOST_IP_INDEX: u32 = 3;

/// A template or rendered config that cannot be used, with the file and line to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrConfError {
    #[error("{file}:{line}: {msg}")]
    At {
        file: String,
        line: usize,
        msg: String,
    },
    #[error("{file}: {msg}")]
    File { file: String, msg: String },
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: String,
    line: usize,
}

#[derive(Debug, Default)]
struct Doc {
    /// Section name → entries, in file order; repeated `[ x ]` headers merge as in OpenSSL.
    sections: HashMap<String, Vec<Entry>>,
    /// 1-based line numbers of `#MOREIPS` placeholders, with their section.
    moreips_lines: Vec<(usize, String)>,
}

impl Doc {
    fn section(&self, name: &str) -> Option<&[Entry]> {
        self.sections.get(name).map(Vec::as_slice)
    }
    fn get(&self, section: &str, key: &str) -> Option<&Entry> {
        self.section(section)?.iter().find(|e| e.key == key)
    }
}

/// A subject name attribute the template may set in its `[ dn ]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnField {
    Country,
    State,
    Locality,
    Organization,
    OrganizationalUnit,
    CommonName,
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AltName {
    Dns(String),
    Ip(IpAddr),
    Uri(String),
    Email(String),
}

/// X.509 key usage bits, as OpenSSL names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsage {
    DigitalSignature,
    NonRepudiation,
    KeyEncipherment,
    DataEncipherment,
    KeyAgreement,
    KeyCertSign,
    CrlSign,
    EncipherOnly,
    DecipherOnly,
}

/// Extended key usages, as OpenSSL names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtKeyUsage {
    ServerAuth,
    ClientAuth,
    CodeSigning,
    EmailProtection,
    TimeStamping,
    OcspSigning,
}

/// What the server certificate must contain, read from the rendered config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertSpec {
    pub subject: Vec<(DnField, String)>,
    pub alt_names: Vec<AltName>,
    pub key_usages: Vec<KeyUsage>,
    pub ext_key_usages: Vec<ExtKeyUsage>,
}

/// A rendered `csr.conf` and what it asks for.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub text: String,
    pub spec: ServerCertSpec,
}

/// Renders `template` (read from `file`, named in errors) with `host_ips` for `#MOREIPS`.
pub fn render(template: &str, file: &str, host_ips: &[IpAddr]) -> Result<Rendered, CsrConfError> {
    let doc = parse(template, file)?;
    let mut spec = extract(&doc, file)?;

    let mut used_indices: BTreeSet<u32> = BTreeSet::new();
    for e in doc.section(ALT_NAMES).unwrap_or_default() {
        if let Some(n) = e.key.strip_prefix("IP.").and_then(|n| n.parse().ok()) {
            used_indices.insert(n);
        }
    }
    let mut extra_lines = Vec::new();
    if !doc.moreips_lines.is_empty() {
        let mut next = FIRST_HOST_IP_INDEX;
        for ip in host_ips {
            if spec.alt_names.contains(&AltName::Ip(*ip)) {
                continue;
            }
            while used_indices.contains(&next) {
                next += 1;
            }
            used_indices.insert(next);
            extra_lines.push(format!("IP.{next} = {ip}"));
            spec.alt_names.push(AltName::Ip(*ip));
        }
    }

    let mut text = String::with_capacity(template.len() + 32 * extra_lines.len());
    let mut placed = false;
    for line in template.lines() {
        if line.trim() == MOREIPS {
            // Every host address goes in once, at the first placeholder; later ones vanish.
            if !placed {
                for l in &extra_lines {
                    text.push_str(l);
                    text.push('\n');
                }
                placed = true;
            }
            continue;
        }
        text.push_str(line);
        text.push('\n');
    }
    Ok(Rendered { text, spec })
}

fn at(file: &str, line: usize, msg: impl Into<String>) -> CsrConfError {
    CsrConfError::At {
        file: file.to_string(),
        line,
        msg: msg.into(),
    }
}

fn parse(text: &str, file: &str) -> Result<Doc, CsrConfError> {
    let mut doc = Doc::default();
    let mut current = "default".to_string();
    let mut first_seen: HashMap<(String, String), usize> = HashMap::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));

    while let Some((lineno, raw)) = lines.next() {
        if raw.trim() == MOREIPS {
            doc.moreips_lines.push((lineno, current.clone()));
            continue;
        }
        // A trailing backslash continues the logical line, as in OpenSSL.
        let mut logical = raw.to_string();
        while logical.ends_with('\\') {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next),
                None => break,
            }
        }
        let content = strip_comment(&logical).trim().to_string();
        if content.is_empty() {
            continue;
        }
        if let Some(inner) = content.strip_prefix('[') {
            let Some(name) = inner.strip_suffix(']') else {
                return Err(at(
                    file,
                    lineno,
                    format!("unterminated section header '{content}'"),
                ));
            };
            let name = name.trim();
            if name.is_empty() || !name.chars().all(is_name_char) {
                return Err(at(file, lineno, format!("invalid section name '{name}'")));
            }
            current = name.to_string();
            doc.sections.entry(current.clone()).or_default();
            continue;
        }
        if content.starts_with('.') {
            return Err(at(
                file,
                lineno,
                format!("directive '{content}' is not supported"),
            ));
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(at(
                file,
                lineno,
                format!("expected 'name = value' or '[ section ]', found '{content}'"),
            ));
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(is_name_char) {
            return Err(at(file, lineno, format!("invalid name '{key}'")));
        }
        let value = unquote(value.trim());
        if value.contains('$') {
            return Err(at(
                file,
                lineno,
                format!("'{key}': variable expansion ('$') is not supported"),
            ));
        }
        let id = (current.clone(), key.to_string());
        if let Some(first) = first_seen.get(&id) {
            return Err(at(
                file,
                lineno,
                format!("duplicate key '{key}' in [ {current} ] (first set at line {first})"),
            ));
        }
        first_seen.insert(id, lineno);
        doc.sections
            .entry(current.clone())
            .or_default()
            .push(Entry {
                key: key.to_string(),
                value,
                line: lineno,
            });
    }
    Ok(doc)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | ';' | '!')
}

/// Drops a `#` comment that is not inside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return &line[..i],
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    line
}

fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

fn extract(doc: &Doc, file: &str) -> Result<ServerCertSpec, CsrConfError> {
    let whole = |msg: String| CsrConfError::File {
        file: file.to_string(),
        msg,
    };
    if doc.section(ALT_NAMES).is_none() {
        return Err(whole(format!("no [ {ALT_NAMES} ] section")));
    }
    // Its IP.n lines land where it stands, so it must sit where OpenSSL reads SANs.
    if let Some((line, section)) = doc.moreips_lines.iter().find(|(_, s)| s != ALT_NAMES) {
        return Err(at(
            file,
            *line,
            format!("{MOREIPS} must be in [ {ALT_NAMES} ], not in [ {section} ]"),
        ));
    }
    let dn_section = match doc.get("req", "distinguished_name") {
        Some(e) => e.value.clone(),
        None => return Err(whole("[ req ] has no 'distinguished_name'".to_string())),
    };
    let Some(dn_entries) = doc.section(&dn_section) else {
        return Err(whole(format!(
            "no [ {dn_section} ] section (named by distinguished_name in [ req ])"
        )));
    };
    let mut subject = Vec::new();
    for e in dn_entries {
        // OpenSSL allows "0.O = a", "1.O = b" for repeated attributes.
        let field_name = e.key.rsplit('.').next().unwrap_or(&e.key);
        let field = match field_name {
            "C" | "countryName" => DnField::Country,
            "ST" | "stateOrProvinceName" => DnField::State,
            "L" | "localityName" => DnField::Locality,
            "O" | "organizationName" => DnField::Organization,
            "OU" | "organizationalUnitName" => DnField::OrganizationalUnit,
            "CN" | "commonName" => DnField::CommonName,
            other => {
                return Err(at(
                    file,
                    e.line,
                    format!("unsupported distinguished name field '{other}'"),
                ));
            }
        };
        if e.value.is_empty() {
            return Err(at(file, e.line, format!("'{}' is empty", e.key)));
        }
        subject.push((field, e.value.clone()));
    }
    if !subject.iter().any(|(f, _)| *f == DnField::CommonName) {
        return Err(whole(format!("[ {dn_section} ] has no CN")));
    }

    let Some(ext) = doc.section(V3_EXT) else {
        return Err(whole(format!("no [ {V3_EXT} ] section")));
    };
    let mut alt_names = Vec::new();
    let mut key_usages = Vec::new();
    let mut ext_key_usages = Vec::new();
    let mut san_from_alt_names = false;
    for e in ext {
        match e.key.as_str() {
            "subjectAltName" => {
                for item in e.value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if let Some(section) = item.strip_prefix('@') {
                        let Some(entries) = doc.section(section) else {
                            return Err(at(
                                file,
                                e.line,
                                format!("subjectAltName names a missing section [ {section} ]"),
                            ));
                        };
                        san_from_alt_names |= section == ALT_NAMES;
                        for a in entries {
                            let kind = a.key.split('.').next().unwrap_or_default();
                            alt_names.push(alt_name(kind, &a.value, &a.key, file, a.line)?);
                        }
                    } else {
                        let Some((kind, value)) = item.split_once(':') else {
                            return Err(at(
                                file,
                                e.line,
                                format!("invalid subjectAltName '{item}'"),
                            ));
                        };
                        alt_names.push(alt_name(kind.trim(), value.trim(), kind, file, e.line)?);
                    }
                }
            }
            "keyUsage" => {
                for u in usage_list(&e.value) {
                    key_usages.push(
                        key_usage(u)
                            .ok_or_else(|| at(file, e.line, format!("unknown keyUsage '{u}'")))?,
                    );
                }
            }
            "extendedKeyUsage" => {
                for u in usage_list(&e.value) {
                    ext_key_usages.push(ext_key_usage(u).ok_or_else(|| {
                        at(file, e.line, format!("unknown extendedKeyUsage '{u}'"))
                    })?);
                }
            }
            "basicConstraints" => {
                let ca_true = usage_list(&e.value).any(|v| v.eq_ignore_ascii_case("CA:TRUE"));
                if ca_true {
                    return Err(at(
                        file,
                        e.line,
                        "the server certificate cannot be a CA (CA:TRUE)",
                    ));
                }
            }
            // Always present in what we issue.
            "authorityKeyIdentifier" | "subjectKeyIdentifier" => {}
            // Anything else would be in csr.conf but not in the certificate mk8s issues.
            other => {
                return Err(at(
                    file,
                    e.line,
                    format!(
                        "unsupported extension '{other}' in [ {V3_EXT} ] (supported: \
                         subjectAltName, keyUsage, extendedKeyUsage, basicConstraints, \
                         authorityKeyIdentifier, subjectKeyIdentifier)"
                    ),
                ));
            }
        }
    }
    if !san_from_alt_names {
        return Err(whole(format!(
            "[ {V3_EXT} ] must have 'subjectAltName = @{ALT_NAMES}'"
        )));
    }
    Ok(ServerCertSpec {
        subject,
        alt_names,
        key_usages,
        ext_key_usages,
    })
}

/// Items of a comma list, without OpenSSL's leading `critical` marker.
fn usage_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "critical")
}

fn alt_name(
    kind: &str,
    value: &str,
    key: &str,
    file: &str,
    line: usize,
) -> Result<AltName, CsrConfError> {
    match kind {
        "DNS" => {
            if is_dns_name(value) {
                Ok(AltName::Dns(value.to_string()))
            } else {
                Err(at(
                    file,
                    line,
                    format!("{key} = '{value}' is not a valid DNS name"),
                ))
            }
        }
        "IP" => value.parse::<IpAddr>().map(AltName::Ip).map_err(|_| {
            at(
                file,
                line,
                format!("{key} = '{value}' is not an IP address"),
            )
        }),
        "URI" if !value.is_empty() && value.is_ascii() => Ok(AltName::Uri(value.to_string())),
        "email" if value.contains('@') && value.is_ascii() => Ok(AltName::Email(value.to_string())),
        "URI" | "email" => Err(at(file, line, format!("{key} = '{value}' is not valid"))),
        _ => Err(at(
            file,
            line,
            format!("unsupported subjectAltName type '{key}' (use DNS.n, IP.n, URI.n or email.n)"),
        )),
    }
}

/// RFC 1123 host name, optionally with a leading `*.` wildcard label.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn key_usage(name: &str) -> Option<KeyUsage> {
    Some(match name {
        "digitalSignature" => KeyUsage::DigitalSignature,
        "nonRepudiation" | "contentCommitment" => KeyUsage::NonRepudiation,
        "keyEncipherment" => KeyUsage::KeyEncipherment,
        "dataEncipherment" => KeyUsage::DataEncipherment,
        "keyAgreement" => KeyUsage::KeyAgreement,
        "keyCertSign" => KeyUsage::KeyCertSign,
        "cRLSign" => KeyUsage::CrlSign,
        "encipherOnly" => KeyUsage::EncipherOnly,
        "decipherOnly" => KeyUsage::DecipherOnly,
        _ => return None,
    })
}

fn ext_key_usage(name: &str) -> Option<ExtKeyUsage> {
    Some(match name {
        "serverAuth" => ExtKeyUsage::ServerAuth,
        "clientAuth" => ExtKeyUsage::ClientAuth,
        "codeSigning" => ExtKeyUsage::CodeSigning,
        "emailProtection" => ExtKeyUsage::EmailProtection,
        "timeStamping" => ExtKeyUsage::TimeStamping,
        "OCSPSigning" => ExtKeyUsage::OcspSigning,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../../certs-templates/csr.conf.template");

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn default_template_renders_host_ips_from_ip3() {
        let r = render(TEMPLATE, "t", &ips(&["192.0.2.2", "fd00::2"])).unwrap();
        assert!(r.text.contains("IP.3 = 192.0.2.2\n"));
        assert!(r.text.contains("IP.4 = fd00::2\n"));
        assert!(!r.text.contains(MOREIPS));
        let dns: Vec<_> = r
            .spec
            .alt_names
            .iter()
            .filter_map(|a| match a {
                AltName::Dns(d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            dns,
            [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster",
                "kubernetes.default.svc.cluster.local"
            ]
        );
        assert!(
            r.spec
                .alt_names
                .contains(&AltName::Ip("10.152.183.1".parse().unwrap()))
        );
        assert!(
            r.spec
                .subject
                .contains(&(DnField::CommonName, "127.0.0.1".into()))
        );
    }

    #[test]
    fn host_ips_skip_numbers_the_user_wrote_and_known_addresses() {
        let t = TEMPLATE.replace(MOREIPS, "IP.3 = 198.51.100.7\nIP.5 = 203.0.113.9\n#MOREIPS");
        let r = render(&t, "t", &ips(&["192.0.2.2", "198.51.100.7", "192.0.2.3"])).unwrap();
        assert!(r.text.contains("IP.4 = 192.0.2.2\n"), "{}", r.text);
        assert!(r.text.contains("IP.6 = 192.0.2.3\n"), "{}", r.text);
        assert_eq!(r.text.matches("198.51.100.7").count(), 1);
    }

    #[test]
    fn user_dns_names_become_sans() {
        let t = TEMPLATE.replace("#MOREIPS", "DNS.6 = mydomain.example\n#MOREIPS");
        let r = render(&t, "t", &[]).unwrap();
        assert!(
            r.spec
                .alt_names
                .contains(&AltName::Dns("mydomain.example".into()))
        );
    }

    #[test]
    fn bad_templates_name_the_line() {
        let no_alt = TEMPLATE.replace("[ alt_names ]", "[ other_names ]");
        assert!(
            render(&no_alt, "t", &[])
                .unwrap_err()
                .to_string()
                .contains("no [ alt_names ]")
        );

        let bad_ip = TEMPLATE.replace("IP.2 = 10.152.183.1", "IP.2 = 10.152.183.999");
        let err = render(&bad_ip, "t", &[]).unwrap_err();
        let line = TEMPLATE.lines().position(|l| l.contains("IP.2 =")).unwrap() + 1;
        assert_eq!(
            err.to_string(),
            format!("t:{line}: IP.2 = '10.152.183.999' is not an IP address")
        );

        let dup = TEMPLATE.replace(
            "IP.2 = 10.152.183.1",
            "IP.2 = 10.152.183.1\nIP.2 = 10.0.0.1",
        );
        let err = render(&dup, "t", &[]).unwrap_err().to_string();
        assert!(err.contains("duplicate key 'IP.2'"), "{err}");

        let bad_dns = TEMPLATE.replace("DNS.1 = kubernetes", "DNS.1 = kube rnetes");
        assert!(
            render(&bad_dns, "t", &[])
                .unwrap_err()
                .to_string()
                .contains("not a valid DNS name")
        );

        let misplaced = TEMPLATE
            .replace("#MOREIPS\n", "")
            .replace("[ req_ext ]\n", "[ req_ext ]\n#MOREIPS\n");
        let err = render(&misplaced, "t", &[]).unwrap_err().to_string();
        assert!(
            err.contains("must be in [ alt_names ], not in [ req_ext ]"),
            "{err}"
        );

        let extension = TEMPLATE.replace("[ v3_ext ]\n", "[ v3_ext ]\nnsComment = hi\n");
        let err = render(&extension, "t", &[]).unwrap_err().to_string();
        assert!(err.contains("unsupported extension 'nsComment'"), "{err}");

        let garbage = format!("{TEMPLATE}\nthis is not a setting\n");
        assert!(
            render(&garbage, "t", &[])
                .unwrap_err()
                .to_string()
                .contains("expected 'name = value'")
        );
    }

    #[test]
    fn comments_and_quotes_follow_openssl() {
        assert_eq!(strip_comment("a = b # c"), "a = b ");
        assert_eq!(strip_comment("a = \"b # c\""), "a = \"b # c\"");
        assert_eq!(unquote("\"x\""), "x");
    }
}
