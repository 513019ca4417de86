//! The Picoclaw adapter: reads the operator's Picoclaw files into known secrets for the detector, plus what
//! `doctor` needs to say which outbound clients pass through the guardian.
//!
//! Four files, each optional: the config (`picoclaw_config`, JSON v3, also the older `channels` and legacy
//! `providers` shapes), `.security.yml` beside it (YAML, the same tree: `model_list` keyed by model name,
//! `channel_list`, and the tools keys `web`/`skills` at its top level), `auth.json` in `picoclaw_home` (OAuth
//! tokens) and `.picoclaw.pid` there (the gateway's bearer token, which only ever goes to the gateway on
//! loopback: any sighting through the proxy is a leak, so it has no allowed uses).
//!
//! Reading never fails: a missing file is normal, a file that does not parse or has the wrong shape becomes a
//! warning and the rest still loads. Values stay in memory; labels (`model_list[0].api_keys[1]`) name them
//! everywhere else. Encrypted (`enc://`) and indirect (`file://`, `env://`, `ref:`) values cannot be matched
//! and are only counted; placeholders (`YOUR_API_KEY`, shorter than [`MIN_SECRET_LEN`]) are ignored.
//!
//! ```no_run
//! use picoclaw_traffic_guardian::picoclaw::secrets::{SecretsWatcher, Sources};
//! # let (home, config) = (std::path::Path::new("/h"), std::path::Path::new("/h/config.json"));
//! let (mut watcher, inventory) = SecretsWatcher::new(Sources::new(home, config));
//! // build the Detector from inventory.secrets ... later, on a timer:
//! if let Some(newer) = watcher.poll() {
//!     // rebuild the Detector from newer.secrets
//! #   drop(newer);
//! }
//! # drop(inventory);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Map, Value};

use super::providers as p;
use crate::config::Config;
use crate::detect::{AllowedUse, KnownSecret};

/// Largest Picoclaw file read; a bigger one is a warning (these files are a few KiB).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Shortest value taken as a secret; shorter ones are placeholders or ids.
pub const MIN_SECRET_LEN: usize = crate::detect::KNOWN_SECRET_MIN_LEN;
/// Nesting depth kept when converting YAML; deeper nodes are dropped (no secret lives that deep).
const MAX_DEPTH: usize = 64;

/// Which file a secret came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKind {
    /// `picoclaw_config` (`config.json`).
    #[default]
    Config,
    /// `.security.yml` beside the config.
    Security,
    /// `auth.json` in `picoclaw_home`.
    Auth,
    /// `.picoclaw.pid` in `picoclaw_home`.
    Pid,
}

impl SourceKind {
    /// The name used in counts and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Config => "config.json",
            SourceKind::Security => ".security.yml",
            SourceKind::Auth => "auth.json",
            SourceKind::Pid => ".picoclaw.pid",
        }
    }
}

/// The paths of the four files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// Picoclaw's config (JSON).
    pub config: PathBuf,
    /// `.security.yml` in the config's directory (where Picoclaw looks for it).
    pub security: PathBuf,
    /// `<picoclaw_home>/auth.json`.
    pub auth: PathBuf,
    /// `<picoclaw_home>/.picoclaw.pid`.
    pub pid: PathBuf,
}

impl Sources {
    /// The files of a Picoclaw home and config path.
    pub fn new(picoclaw_home: &Path, picoclaw_config: &Path) -> Sources {
        let dir = picoclaw_config.parent().unwrap_or_else(|| Path::new("."));
        Sources {
            config: picoclaw_config.to_path_buf(),
            security: dir.join(".security.yml"),
            auth: picoclaw_home.join("auth.json"),
            pid: picoclaw_home.join(".picoclaw.pid"),
        }
    }

    /// The files the effective configuration points at.
    pub fn from_config(cfg: &Config) -> Sources {
        Sources::new(&cfg.picoclaw_home, &cfg.picoclaw_config)
    }

    fn all(&self) -> [(SourceKind, &Path); 4] {
        [
            (SourceKind::Config, &self.config),
            (SourceKind::Security, &self.security),
            (SourceKind::Auth, &self.auth),
            (SourceKind::Pid, &self.pid),
        ]
    }
}

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    /// Not there (normal for all but the config).
    Missing,
    /// Read and parsed.
    Loaded,
    /// There but not usable; the reason is also in [`Inventory::warnings`].
    Unusable,
}

/// How an outbound client of the gateway reaches the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Through the environment proxy, i.e. the guardian under `run`.
    Guardian,
    /// An explicit `proxy` key in the Picoclaw config overrides the environment.
    ProxyOverride {
        /// The key, e.g. `model_list[2].proxy` (never its value: proxy URLs carry credentials).
        key: String,
    },
    /// A loopback target: Go never proxies those.
    Loopback,
}

/// One outbound client found in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// What it is, e.g. `model_list[0] (openai/gpt-4o)` or `channel_list.telegram (telegram)`.
    pub name: String,
    /// The host it talks to, when known.
    pub host: Option<String>,
    /// How it gets there.
    pub route: Route,
}

/// Counts of what was read (no values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Known secrets by the file they were first found in (a value found twice counts once).
    pub by_source: BTreeMap<&'static str, usize>,
    /// `enc://` values skipped: the guardian cannot decrypt them.
    pub encrypted: usize,
    /// `file://`, `env://`, `ref:` values skipped: they point elsewhere.
    pub references: usize,
    /// Empty-looking or placeholder values ignored.
    pub placeholders: usize,
}

/// Everything read from the Picoclaw files.
#[derive(Clone, Default)]
pub struct Inventory {
    /// The known secrets for [`DetectorOptions`](crate::detect::DetectorOptions), values included. Each
    /// [`AllowedUse::header`] is a lowercase header name, `path` (anywhere in the request target) or `body`
    /// (the HTTP body or a WebSocket message); see [`providers`](super::providers). An empty `allowed` means
    /// every sighting is a leak (the gateway token, webhook-only keys, keys with no known destination).
    pub secrets: Vec<KnownSecret>,
    /// Counts by source.
    pub counts: Counts,
    /// Files that could not be used, shapes that were wrong, keys without a destination. No values.
    pub warnings: Vec<String>,
    /// State of each file, by [`SourceKind::as_str`].
    pub files: BTreeMap<&'static str, FileState>,
    /// Outbound clients and their routes.
    pub clients: Vec<Client>,
    /// MCP servers started as child processes (`tools.mcp.servers.<name>`).
    pub mcp_stdio: Vec<String>,
    /// Models served by a local CLI child process (`claude-cli/...`, `codex-cli/...`).
    pub cli_models: Vec<String>,
    /// Whether an enabled Telegram channel exists.
    pub telegram_enabled: bool,
    /// Whether the ClawHub skill registry is enabled in the config.
    pub clawhub_enabled: bool,
}

impl Inventory {
    /// Detector options for this inventory: its known secrets, and as extra provider hosts every host a
    /// configured key may be sent to in a credential header (a self-hosted or OpenAI-compatible `api_base`
    /// receiving its own key in `Authorization` is normal traffic).
    pub fn detector_options(&self) -> crate::detect::DetectorOptions {
        const CREDENTIAL_HEADERS: [&str; 5] =
            ["authorization", "x-api-key", "x-goog-api-key", "api-key", "x-subscription-token"];
        let mut hosts: Vec<String> = self
            .secrets
            .iter()
            .flat_map(|s| &s.allowed)
            .filter(|u| CREDENTIAL_HEADERS.contains(&u.header.as_str()))
            .map(|u| u.host.clone())
            .collect();
        hosts.sort();
        hosts.dedup();
        crate::detect::DetectorOptions { known_secrets: self.secrets.clone(), provider_hosts: hosts }
    }
}

// Hand-written so that a stray `{:?}` can never print a secret.
impl fmt::Debug for Inventory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inventory")
            .field("secrets", &self.labels())
            .field("counts", &self.counts)
            .field("warnings", &self.warnings)
            .field("files", &self.files)
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

impl Inventory {
    /// The labels of the known secrets, in load order.
    pub fn labels(&self) -> Vec<&str> {
        self.secrets.iter().map(|s| s.label.as_str()).collect()
    }

    /// The known secret with this label.
    pub fn by_label(&self, label: &str) -> Option<&KnownSecret> {
        self.secrets.iter().find(|s| s.label == label)
    }
}

/// Reads the four files once.
pub fn load(sources: &Sources) -> Inventory {
    let mut b = Builder::default();
    let mut known = Known::default();
    for (kind, path) in sources.all() {
        let Some(text) = b.read(kind, path) else { continue };
        b.source = kind;
        match kind {
            SourceKind::Config => match serde_json::from_str::<Value>(&text) {
                Ok(v) if v.is_object() => {
                    b.loaded(kind);
                    known = b.config_tree(&v, true, &Known::default());
                }
                Ok(_) => b.unusable(kind, format!("{}: not a JSON object; ignored", path.display())),
                Err(e) => b.unusable(kind, format!("{}: not valid JSON ({e}); ignored", path.display())),
            },
            SourceKind::Security => match yaml_to_json(&text) {
                Ok(Value::Null) => b.loaded(kind),
                Ok(v) if v.is_object() => {
                    b.loaded(kind);
                    b.config_tree(&v, false, &known);
                }
                Ok(_) => b.unusable(kind, format!("{}: not a YAML mapping; ignored", path.display())),
                Err(e) => b.unusable(kind, format!("{}: not valid YAML ({e}); ignored", path.display())),
            },
            SourceKind::Auth => match serde_json::from_str::<Value>(&text) {
                Ok(v) if v.is_object() => {
                    b.loaded(kind);
                    b.auth(&v);
                }
                Ok(_) => b.unusable(kind, format!("{}: not a JSON object; ignored", path.display())),
                Err(e) => b.unusable(kind, format!("{}: not valid JSON ({e}); ignored", path.display())),
            },
            SourceKind::Pid => b.pid(path, &text),
        }
    }
    b.inv.secrets = b.secrets;
    b.inv
}

/// Loads the secrets and reloads them when one of the files changes (size, mtime, ctime or inode, so an
/// atomic rename counts too). The proxy calls [`poll`](SecretsWatcher::poll) every few seconds and
/// rebuilds its detector when it returns a new inventory. A poll with no change is four `stat` calls; it is
/// blocking file I/O, so an async caller runs it in `spawn_blocking` or on its own timer thread.
#[derive(Debug)]
pub struct SecretsWatcher {
    sources: Sources,
    stamps: Vec<Option<Stamp>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: Option<SystemTime>,
    ctime: (i64, i64),
    ino: u64,
}

impl SecretsWatcher {
    /// Loads once and remembers the files' stamps.
    pub fn new(sources: Sources) -> (SecretsWatcher, Inventory) {
        // Stamps first: a change while reading then shows up at the next poll instead of being lost.
        let stamps = stamps(&sources);
        let inv = load(&sources);
        (SecretsWatcher { sources, stamps }, inv)
    }

    /// A fresh inventory when any file appeared, disappeared or changed since the last load; else `None`.
    pub fn poll(&mut self) -> Option<Inventory> {
        let now = stamps(&self.sources);
        if now == self.stamps {
            return None;
        }
        self.stamps = now;
        Some(load(&self.sources))
    }

    /// The files watched.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }
}

fn stamps(sources: &Sources) -> Vec<Option<Stamp>> {
    sources
        .all()
        .iter()
        .map(|(_, path)| {
            fs::metadata(path).ok().map(|m| Stamp {
                len: m.len(),
                mtime: m.modified().ok(),
                ctime: (m.ctime(), m.ctime_nsec()),
                ino: m.ino(),
            })
        })
        .collect()
}

/// What a value in a secret slot turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A usable secret.
    Secret,
    /// `enc://...`.
    Encrypted,
    /// `file://`, `env://`, `ref:`.
    Reference,
    /// Empty, short, or a placeholder such as `YOUR_API_KEY` or Picoclaw's `[NOT_HERE]`.
    Placeholder,
}

/// Classifies a value found in a secret slot.
pub fn classify(value: &str) -> ValueKind {
    let v = value.trim();
    if v.starts_with("enc://") {
        return ValueKind::Encrypted;
    }
    if v.starts_with("file://") || v.starts_with("env://") || v.starts_with("ref:") {
        return ValueKind::Reference;
    }
    let upper = v.to_ascii_uppercase();
    let placeholder = v.chars().count() < MIN_SECRET_LEN
        || upper.contains("YOUR_")
        || upper.contains("YOUR-")
        || upper.starts_with("YOUR")
        || (v.starts_with('[') && v.ends_with(']'))
        || (v.contains('<') && v.contains('>'))
        || (v.starts_with("${") && v.ends_with('}'))
        || ["PLACEHOLDER", "CHANGEME", "CHANGE_ME", "EXAMPLE", "XXXXXX", "REPLACE"].iter().any(|w| upper.contains(w))
        || v.chars().all(|c| v.starts_with(c));
    if placeholder {
        ValueKind::Placeholder
    } else {
        ValueKind::Secret
    }
}

/// A model entry of the config, kept to give `.security.yml` keys (listed by model name) a destination.
#[derive(Debug, Clone)]
struct ModelInfo {
    name: String,
    uses: Vec<AllowedUse>,
}

/// What the config says that `.security.yml` needs: its models, and each channel's type and own hosts.
#[derive(Debug, Clone, Default)]
struct Known {
    models: Vec<ModelInfo>,
    channels: HashMap<String, (String, Vec<String>)>,
}

#[derive(Default)]
struct Builder {
    inv: Inventory,
    secrets: Vec<KnownSecret>,
    index: HashMap<String, usize>,
    source: SourceKind,
    known_channels: HashMap<String, (String, Vec<String>)>,
}

impl Builder {
    fn read(&mut self, kind: SourceKind, path: &Path) -> Option<String> {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.inv.files.insert(kind.as_str(), FileState::Missing);
                return None;
            }
            Err(e) => {
                self.unusable(kind, format!("{}: cannot be read ({e})", path.display()));
                return None;
            }
        };
        let mut buf = Vec::new();
        if let Err(e) = file.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf) {
            self.unusable(kind, format!("{}: cannot be read ({e})", path.display()));
            return None;
        }
        if buf.len() as u64 > MAX_FILE_BYTES {
            self.unusable(kind, format!("{}: larger than {MAX_FILE_BYTES} bytes; ignored", path.display()));
            return None;
        }
        match String::from_utf8(buf) {
            Ok(s) => Some(s),
            Err(_) => {
                self.unusable(kind, format!("{}: not UTF-8 text; ignored", path.display()));
                None
            }
        }
    }

    fn loaded(&mut self, kind: SourceKind) {
        self.inv.files.insert(kind.as_str(), FileState::Loaded);
    }

    fn unusable(&mut self, kind: SourceKind, warning: String) {
        self.inv.files.insert(kind.as_str(), FileState::Unusable);
        self.inv.warnings.push(warning);
    }

    fn warn(&mut self, warning: String) {
        self.inv.warnings.push(warning);
    }

    fn label(&self, path: &str) -> String {
        match self.source {
            SourceKind::Config => path.to_owned(),
            k => format!("{}:{path}", k.as_str()),
        }
    }

    /// Takes a value from a secret slot: a string, or an array of strings (`api_keys`), or anything else
    /// (ignored: wrong types are tolerated, and Picoclaw writes `"[NOT_HERE]"` where an array would be).
    fn take(&mut self, value: Option<&Value>, path: &str, uses: &[AllowedUse]) {
        match value {
            Some(Value::String(s)) => self.take_str(s, path, uses),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::String(s) = item {
                        self.take_str(s, &format!("{path}[{i}]"), uses);
                    }
                }
            }
            _ => {}
        }
    }

    fn take_str(&mut self, raw: &str, path: &str, uses: &[AllowedUse]) {
        match classify(raw) {
            ValueKind::Encrypted => self.inv.counts.encrypted += 1,
            ValueKind::Reference => self.inv.counts.references += 1,
            ValueKind::Placeholder => {
                if !raw.trim().is_empty() {
                    self.inv.counts.placeholders += 1;
                }
            }
            ValueKind::Secret if raw.trim().len() > crate::detect::KNOWN_SECRET_MAX_LEN => {
                self.inv.warnings.push(format!(
                    "{path} is longer than {} bytes: not watched as a known secret (the format rules still apply)",
                    crate::detect::KNOWN_SECRET_MAX_LEN
                ));
            }
            ValueKind::Secret => {
                let value = raw.trim().to_owned();
                if let Some(&i) = self.index.get(&value) {
                    // The same key in two places (config and .security.yml): one secret, all uses.
                    let s = &mut self.secrets[i];
                    for u in uses {
                        if !s.allowed.contains(u) {
                            s.allowed.push(u.clone());
                        }
                    }
                    return;
                }
                let label = self.label(path);
                *self.inv.counts.by_source.entry(self.source.as_str()).or_default() += 1;
                self.index.insert(value.clone(), self.secrets.len());
                self.secrets.push(KnownSecret { value, label, allowed: uses.to_vec() });
            }
        }
    }

    /// The config tree, shared by `config.json` (`is_config`) and `.security.yml` (given what the config
    /// said). Returns what this tree says, for the next one.
    fn config_tree(&mut self, root: &Value, is_config: bool, known: &Known) -> Known {
        let mut models = Vec::new();
        match root.get("model_list") {
            Some(Value::Array(list)) => {
                for (i, entry) in list.iter().enumerate() {
                    if let Some(m) = self.model(entry, &format!("model_list[{i}]"), is_config) {
                        models.push(m);
                    }
                }
            }
            // `.security.yml` lists keys by model name (`gpt-4o`, or `gpt-4o:1` for the second of that name).
            Some(Value::Object(map)) => {
                for (name, entry) in map {
                    let uses = match find_model(&known.models, name) {
                        Some(m) => m.uses.clone(),
                        None => {
                            self.warn(format!(
                                "{}: model_list.{name} matches no model_list entry of the config; its keys have no \
                                 legitimate destination, so every sighting will be reported",
                                SourceKind::Security.as_str()
                            ));
                            Vec::new()
                        }
                    };
                    for key in ["api_keys", "api_key"] {
                        self.take(entry.get(key), &format!("model_list.{name}.{key}"), &uses);
                    }
                }
            }
            Some(_) => self.warn(format!("{}: model_list is neither a list nor a mapping; skipped", self.here())),
            None => {}
        }
        for key in ["channel_list", "channels"] {
            match root.get(key) {
                Some(Value::Object(map)) => {
                    for (name, ch) in map {
                        self.channel(key, name, ch, is_config, known);
                    }
                }
                Some(_) => self.warn(format!("{}: {key} is not a mapping; skipped", self.here())),
                None => {}
            }
        }
        // `.security.yml` carries the tools keys at its top level (Picoclaw inlines them); accept both.
        let tools = root.get("tools").filter(|t| t.is_object()).unwrap_or(root);
        let prefix = if std::ptr::eq(tools, root) { "" } else { "tools." };
        if let Some(web) = tools.get("web") {
            self.web(web, &format!("{prefix}web"), is_config);
        }
        if let Some(skills) = tools.get("skills") {
            self.skills(skills, &format!("{prefix}skills"), is_config);
        }
        if let Some(Value::Object(servers)) = tools.get("mcp").and_then(|m| m.get("servers")) {
            let mcp_on = tools.get("mcp").and_then(|m| m.get("enabled")).and_then(Value::as_bool) != Some(false);
            for (name, server) in servers {
                self.mcp(&format!("{prefix}mcp.servers.{name}"), server, is_config && mcp_on);
            }
        }
        if let Some(Value::Object(providers)) = root.get("providers") {
            for (name, entry) in providers {
                self.legacy_provider(name, entry, is_config);
            }
        }
        Known { models, channels: std::mem::take(&mut self.known_channels) }
    }

    fn here(&self) -> &'static str {
        self.source.as_str()
    }

    fn model(&mut self, entry: &Value, path: &str, is_config: bool) -> Option<ModelInfo> {
        let Value::Object(e) = entry else {
            self.warn(format!("{}: {path} is not an object; skipped", self.here()));
            return None;
        };
        let model = str_of(e, "model").unwrap_or("");
        let protocol = p::protocol_of(model);
        let api_base = str_of(e, "api_base").filter(|s| !s.trim().is_empty());
        let host = match api_base {
            Some(base) => p::url_host(base),
            None => match p::model_default_host(&protocol) {
                Some(h) => h.map(str::to_owned),
                None => {
                    self.warn(format!(
                        "{}: {path}: model prefix {protocol:?} is unknown to Picoclaw and there is no api_base; \
                         its keys have no legitimate destination",
                        self.here()
                    ));
                    None
                }
            },
        };
        let uses = uses_for(host.as_deref(), p::model_headers(&protocol));
        for key in ["api_keys", "api_key"] {
            self.take(e.get(key), &format!("{path}.{key}"), &uses);
        }
        if is_config {
            if p::CLI_PREFIXES.contains(&protocol.as_str()) {
                self.inv.cli_models.push(format!("{path} ({model})"));
            } else if host.is_some() && configured(e) {
                let route = route(e.get("proxy"), &format!("{path}.proxy"), host.as_deref());
                self.inv.clients.push(Client { name: format!("{path} ({model})"), host: host.clone(), route });
            }
        }
        Some(ModelInfo { name: str_of(e, "model_name").unwrap_or("").to_owned(), uses })
    }

    fn channel(&mut self, key: &str, name: &str, ch: &Value, is_config: bool, known: &Known) {
        let Value::Object(obj) = ch else { return };
        // v3 nests channel settings under `settings`; the older shape has them flat. `.security.yml` may use
        // either, so with `settings` present the flat fields are read too.
        let nested = match obj.get("settings") {
            Some(Value::Object(s)) => Some(s),
            _ => None,
        };
        let settings = nested.unwrap_or(obj);
        let path = match nested {
            Some(_) => format!("{key}.{name}.settings"),
            None => format!("{key}.{name}"),
        };
        let mut slots = vec![(settings, path.clone())];
        if nested.is_some() {
            slots.push((obj, format!("{key}.{name}")));
        }
        // `.security.yml` entries carry no `type`: take the one the config gave this channel name.
        let from_config = known.channels.get(name);
        let kind = str_of(obj, "type")
            .filter(|t| !t.is_empty())
            .map(str::to_ascii_lowercase)
            .or_else(|| from_config.map(|(k, _)| k.clone()))
            .unwrap_or_else(|| name.to_ascii_lowercase());
        let mut own_hosts: Vec<String> =
            p::CHANNEL_URL_FIELDS.iter().filter_map(|f| str_of(settings, f)).filter_map(p::url_host).collect();
        for h in from_config.map(|(_, h)| h.as_slice()).unwrap_or(&[]) {
            if !own_hosts.contains(h) {
                own_hosts.push(h.clone());
            }
        }
        let mut first_host = own_hosts.first().cloned();
        let table = p::CHANNELS.iter().find(|(t, _)| *t == kind).map(|(_, f)| *f);
        let fields: Vec<(&str, Vec<AllowedUse>)> = match table {
            Some(fields) => fields
                .iter()
                .map(|(field, dests)| {
                    let mut uses: Vec<AllowedUse> = dests.iter().map(|(h, w)| use_of(h, w)).collect();
                    for h in &own_hosts {
                        for (_, w) in dests.iter() {
                            push_unique(&mut uses, use_of(h, w));
                        }
                    }
                    if first_host.is_none() {
                        first_host = dests.first().map(|(h, _)| (*h).to_owned());
                    }
                    (*field, uses)
                })
                .collect(),
            None => p::GENERIC_CHANNEL_SECRET_FIELDS
                .iter()
                .map(|f| (*f, uses_for_hosts(&own_hosts, &["authorization"])))
                .collect(),
        };
        for (field, uses) in &fields {
            for (slot, slot_path) in &slots {
                self.take(slot.get(*field), &format!("{slot_path}.{field}"), uses);
            }
        }
        self.known_channels.insert(name.to_owned(), (kind.clone(), own_hosts));
        let enabled = obj.get("enabled").and_then(Value::as_bool) == Some(true);
        if is_config && enabled {
            if kind == "telegram" {
                self.inv.telegram_enabled = true;
            }
            let proxy = settings.get("proxy").or_else(|| obj.get("proxy"));
            let route = route(proxy, &format!("{path}.proxy"), first_host.as_deref());
            self.inv.clients.push(Client { name: format!("{key}.{name} ({kind})"), host: first_host, route });
        }
    }

    fn web(&mut self, web: &Value, path: &str, is_config: bool) {
        let Value::Object(map) = web else { return };
        for (name, entry) in map {
            let Value::Object(e) = entry else { continue };
            let table = p::WEB_SEARCH.iter().find(|(n, _)| n == name).map(|(_, u)| *u).unwrap_or(&[]);
            let base_host = str_of(e, "base_url").and_then(p::url_host);
            let mut uses: Vec<AllowedUse> = table.iter().map(|(h, w)| use_of(h, w)).collect();
            if let Some(h) = &base_host {
                let ways: Vec<&str> =
                    if table.is_empty() { vec!["authorization"] } else { table.iter().map(|(_, w)| *w).collect() };
                for w in ways {
                    push_unique(&mut uses, use_of(h, w));
                }
            }
            for key in ["api_keys", "api_key"] {
                self.take(e.get(key), &format!("{path}.{name}.{key}"), &uses);
            }
            if is_config && e.get("enabled").and_then(Value::as_bool) == Some(true) {
                if let Some(h) = base_host.filter(|h| p::is_loopback_host(h)) {
                    self.inv.clients.push(Client {
                        name: format!("{path}.{name}"),
                        host: Some(h),
                        route: Route::Loopback,
                    });
                }
            }
        }
        if is_config {
            let route = route(map.get("proxy"), &format!("{path}.proxy"), None);
            self.inv.clients.push(Client { name: format!("{path} (web_search, web_fetch)"), host: None, route });
        }
    }

    fn skills(&mut self, skills: &Value, path: &str, is_config: bool) {
        let Value::Object(map) = skills else { return };
        if let Some(Value::Object(gh)) = map.get("github") {
            let uses: Vec<AllowedUse> = p::GITHUB.iter().map(|(h, w)| use_of(h, w)).collect();
            self.take(gh.get("token"), &format!("{path}.github.token"), &uses);
            if is_config {
                let route = route(gh.get("proxy"), &format!("{path}.github.proxy"), Some("github.com"));
                self.inv.clients.push(Client {
                    name: format!("{path}.github"),
                    host: Some("github.com".into()),
                    route,
                });
            }
        }
        // The ClawHub token: older `.security.yml` has `skills.clawhub`, the config `skills.registries`
        // (a mapping by name, or a list of objects with `name`).
        if let Some(Value::Object(ch)) = map.get("clawhub") {
            self.clawhub(ch, &format!("{path}.clawhub"), is_config);
        }
        match map.get("registries") {
            Some(Value::Object(regs)) => {
                for (name, reg) in regs {
                    if let (Value::Object(r), true) = (reg, name.eq_ignore_ascii_case("clawhub")) {
                        self.clawhub(r, &format!("{path}.registries.{name}"), is_config);
                    }
                }
            }
            Some(Value::Array(regs)) => {
                for (i, reg) in regs.iter().enumerate() {
                    if let Value::Object(r) = reg {
                        if str_of(r, "name").is_some_and(|n| n.eq_ignore_ascii_case("clawhub")) {
                            self.clawhub(r, &format!("{path}.registries[{i}]"), is_config);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn clawhub(&mut self, reg: &Map<String, Value>, path: &str, is_config: bool) {
        let mut uses: Vec<AllowedUse> = p::CLAWHUB.iter().map(|(h, w)| use_of(h, w)).collect();
        if let Some(h) = str_of(reg, "base_url").and_then(p::url_host) {
            push_unique(&mut uses, use_of(&h, "authorization"));
        }
        self.take(reg.get("auth_token"), &format!("{path}.auth_token"), &uses);
        if is_config && reg.get("enabled").and_then(Value::as_bool) != Some(false) {
            self.inv.clawhub_enabled = true;
        }
    }

    fn mcp(&mut self, path: &str, server: &Value, active_in_config: bool) {
        let Value::Object(s) = server else { return };
        let url_host = str_of(s, "url").and_then(p::url_host);
        if let Some(Value::Object(headers)) = s.get("headers") {
            for (name, value) in headers {
                let lower = name.to_ascii_lowercase();
                if !["auth", "key", "token", "secret", "cookie"].iter().any(|w| lower.contains(w)) {
                    continue;
                }
                let uses = uses_for(url_host.as_deref(), &[lower.as_str()]);
                // `Authorization: Bearer <token>`: the token is the secret, the scheme is not.
                let v = value.as_str().map(|v| v.strip_prefix("Bearer ").unwrap_or(v));
                self.take(v.map(|v| Value::String(v.to_owned())).as_ref(), &format!("{path}.headers.{name}"), &uses);
            }
        }
        if !active_in_config || s.get("enabled").and_then(Value::as_bool) == Some(false) {
            return;
        }
        let kind = str_of(s, "type").unwrap_or("");
        if kind == "stdio" || (url_host.is_none() && str_of(s, "command").is_some()) {
            self.inv.mcp_stdio.push(path.to_owned());
        } else if let Some(h) = url_host {
            let route = if p::is_loopback_host(&h) { Route::Loopback } else { Route::Guardian };
            self.inv.clients.push(Client { name: path.to_owned(), host: Some(h), route });
        }
    }

    fn legacy_provider(&mut self, name: &str, entry: &Value, is_config: bool) {
        let Value::Object(e) = entry else { return };
        let protocol = name.replace('_', "-").to_ascii_lowercase();
        let host = match str_of(e, "api_base").filter(|s| !s.trim().is_empty()) {
            Some(base) => p::url_host(base),
            None => p::model_default_host(&protocol).flatten().map(str::to_owned),
        };
        let uses = uses_for(host.as_deref(), p::model_headers(&protocol));
        self.take(e.get("api_key"), &format!("providers.{name}.api_key"), &uses);
        let has_key = e.get("api_key").and_then(Value::as_str).is_some_and(|k| classify(k) != ValueKind::Placeholder);
        if is_config && has_key && host.is_some() {
            let route = route(e.get("proxy"), &format!("providers.{name}.proxy"), host.as_deref());
            self.inv.clients.push(Client { name: format!("providers.{name}"), host, route });
        }
    }

    fn auth(&mut self, root: &Value) {
        let Some(Value::Object(creds)) = root.get("credentials") else {
            if root.get("credentials").is_some() {
                self.warn(format!("{}: credentials is not a mapping; skipped", self.here()));
            }
            return;
        };
        for (name, cred) in creds {
            let Value::Object(c) = cred else { continue };
            let provider = str_of(c, "provider").unwrap_or(name).to_ascii_lowercase();
            let (access, refresh) = match p::OAUTH.iter().find(|(n, _, _)| *n == provider) {
                Some((_, a, r)) => (*a, *r),
                None => {
                    self.warn(format!(
                        "{}: credentials.{name}: provider {provider:?} has no known OAuth hosts; its tokens have no \
                         legitimate destination, so every sighting will be reported",
                        self.here()
                    ));
                    (&[][..], &[][..])
                }
            };
            let to_uses = |t: &[(&str, &str)]| t.iter().map(|(h, w)| use_of(h, w)).collect::<Vec<_>>();
            self.take(c.get("access_token"), &format!("credentials.{name}.access_token"), &to_uses(access));
            self.take(c.get("refresh_token"), &format!("credentials.{name}.refresh_token"), &to_uses(refresh));
        }
    }

    fn pid(&mut self, path: &Path, text: &str) {
        let t = text.trim();
        // Old gateways wrote a bare PID: no token, nothing to learn.
        if t.is_empty() || t.bytes().all(|b| b.is_ascii_digit()) {
            self.loaded(SourceKind::Pid);
            return;
        }
        match serde_json::from_str::<Value>(t) {
            Ok(Value::Object(m)) => {
                self.loaded(SourceKind::Pid);
                // The gateway token is only ever sent to the gateway itself on loopback: no allowed use.
                self.take(m.get("token"), "token", &[]);
            }
            _ => {
                self.unusable(SourceKind::Pid, format!("{}: neither a PID nor a JSON object; ignored", path.display()))
            }
        }
    }
}

/// Whether Picoclaw would build a client for this model entry: it needs a key (in any form, even one kept
/// in `.security.yml`), an `api_base`, or an OAuth `auth_method`.
fn configured(e: &Map<String, Value>) -> bool {
    let non_empty = |k: &str| match e.get(k) {
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str().is_some_and(|s| !s.trim().is_empty())),
        _ => false,
    };
    ["api_keys", "api_key", "api_base", "auth_method"].iter().any(|k| non_empty(k))
}

fn find_model<'a>(models: &'a [ModelInfo], key: &str) -> Option<&'a ModelInfo> {
    if let Some(m) = models.iter().find(|m| m.name == key) {
        return Some(m);
    }
    let (base, n) = key.rsplit_once(':')?;
    let n: usize = n.parse().ok()?;
    models.iter().filter(|m| m.name == base).nth(n)
}

fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

fn use_of(host: &str, way: &str) -> AllowedUse {
    AllowedUse { host: host.to_ascii_lowercase(), header: way.to_ascii_lowercase() }
}

fn push_unique(uses: &mut Vec<AllowedUse>, u: AllowedUse) {
    if !uses.contains(&u) {
        uses.push(u);
    }
}

fn uses_for(host: Option<&str>, ways: &[&str]) -> Vec<AllowedUse> {
    host.map(|h| ways.iter().map(|w| use_of(h, w)).collect()).unwrap_or_default()
}

fn uses_for_hosts(hosts: &[String], ways: &[&str]) -> Vec<AllowedUse> {
    hosts.iter().flat_map(|h| ways.iter().map(move |w| use_of(h, w))).collect()
}

fn route(proxy: Option<&Value>, key: &str, host: Option<&str>) -> Route {
    if proxy.and_then(Value::as_str).is_some_and(|p| !p.trim().is_empty()) {
        return Route::ProxyOverride { key: key.to_owned() };
    }
    if host.is_some_and(p::is_loopback_host) {
        return Route::Loopback;
    }
    Route::Guardian
}

/// Parses YAML (the first document) into a JSON value, so one walker serves both files. Scalars keep
/// YAML 1.2 core types; tags are dropped; aliases become null.
pub fn yaml_to_json(text: &str) -> Result<Value, String> {
    use saphyr::{LoadableYamlNode, Yaml};
    let docs = Yaml::load_from_str(text).map_err(|e| e.to_string())?;
    fn conv(y: &Yaml<'_>, depth: usize) -> Value {
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        match y {
            Yaml::Value(s) => scalar(s),
            Yaml::Representation(s, _, _) => Value::String(s.to_string()),
            Yaml::Sequence(items) => Value::Array(items.iter().map(|i| conv(i, depth + 1)).collect()),
            Yaml::Mapping(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let key = match conv(k, depth + 1) {
                        Value::String(s) => s,
                        Value::Null => continue,
                        other => other.to_string(),
                    };
                    out.insert(key, conv(v, depth + 1));
                }
                Value::Object(out)
            }
            Yaml::Tagged(_, inner) => conv(inner, depth),
            Yaml::Alias(_) | Yaml::BadValue => Value::Null,
        }
    }
    fn scalar(s: &saphyr::Scalar<'_>) -> Value {
        match s {
            saphyr::Scalar::Null => Value::Null,
            saphyr::Scalar::Boolean(b) => Value::Bool(*b),
            saphyr::Scalar::Integer(i) => Value::from(*i),
            saphyr::Scalar::FloatingPoint(f) => {
                serde_json::Number::from_f64(f.into_inner()).map_or(Value::Null, Value::Number)
            }
            saphyr::Scalar::String(s) => Value::String(s.to_string()),
        }
    }
    Ok(docs.first().map_or(Value::Null, |d| conv(d, 0)))
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
