//! The rule tables, one per family. A rule is data: id, threat type, severity, keywords for the
//! Aho-Corasick prefilter, a bounded regex, what to redact, an optional validator and, for provider keys,
//! where the key is legitimately sent.
//!
//! Invariants checked when a [`super::Detector`] is built (and by the rule-table test):
//! - every rule has at least one keyword, lowercase, and every match of the regex contains one of them
//!   (case-insensitively), so skipping a window without a keyword never loses a match;
//! - every regex has a bounded maximum match length of at most [`MAX_RULE_LEN`] bytes, which is what the
//!   streaming scanner keeps as overlap;
//! - every regex starts with `(?-u)`: matching is on bytes, so invalid UTF-8 is just more bytes and `\b`
//!   needs one byte of context.
//!
//! A rule's value is the capture group named `v` when there is one, else the whole match. The value is what
//! gets fingerprinted and, for `secret` rules, redacted.

use super::{Severity, ThreatType};

/// Longest match any rule may have, in bytes. The streaming overlap is derived from the real maximum.
pub const MAX_RULE_LEN: usize = 2048;

/// Extra checks on a matched value that a regex cannot express.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Check {
    /// Nothing more.
    Plain,
    /// Not a documented example or placeholder, and at least this Shannon entropy (bits per character).
    Secret(f64),
    /// An SSH key path that is not the public half (`.pub`).
    NotPublicKey,
    /// A dotenv path that is not a template (`.env.example`, `.env.sample` ...).
    NotTemplate,
    /// `rm` with a recursive flag.
    Recursive,
}

/// A provider whose keys are normal in its credential headers to its own hosts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Provider {
    /// Host names; `*.domain` matches any subdomain.
    pub hosts: &'static [&'static str],
    /// Lowercase header names, `path` for the request target, `body` for the body.
    pub carriers: &'static [&'static str],
}

/// One rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub id: &'static str,
    pub threat: ThreatType,
    pub severity: Severity,
    /// Lowercase literals; the regex runs only on windows holding one of them.
    pub keywords: &'static [&'static str],
    pub regex: &'static str,
    /// The value is a secret: it is redacted in snippets and by `redact`.
    pub secret: bool,
    pub check: Check,
    pub provider: Option<Provider>,
}

/// Credential headers of the OpenAI-compatible family (CONTRACT §8).
const BEARER: &[&str] = &["authorization"];

const OPENAI: Provider = Provider { hosts: &["api.openai.com"], carriers: BEARER };
const ANTHROPIC: Provider = Provider { hosts: &["api.anthropic.com"], carriers: &["x-api-key", "authorization"] };
const GOOGLE: Provider = Provider {
    hosts: &["generativelanguage.googleapis.com", "aiplatform.googleapis.com"],
    carriers: &["x-goog-api-key"],
};
const HUGGINGFACE: Provider =
    Provider { hosts: &["huggingface.co", "*.huggingface.co", "*.hf.space"], carriers: BEARER };
const OPENROUTER: Provider = Provider { hosts: &["openrouter.ai"], carriers: BEARER };
const GROQ: Provider = Provider { hosts: &["api.groq.com"], carriers: BEARER };
const XAI: Provider = Provider { hosts: &["api.x.ai"], carriers: BEARER };
const TELEGRAM: Provider = Provider { hosts: &["api.telegram.org"], carriers: &["path"] };
const TAVILY: Provider = Provider { hosts: &["api.tavily.com"], carriers: &["authorization", "body"] };
/// `sk-` + 32..64 alphanumerics is the key shape of many OpenAI-compatible providers (DeepSeek, Moonshot,
/// Qwen/DashScope, SiliconFlow ...), so any of the known AI hosts may receive it.
const OPENAI_COMPATIBLE: Provider = Provider { hosts: AI_HOSTS, carriers: &["authorization", "api-key"] };

/// Hosts of the AI providers Picoclaw talks to (CONTRACT §8 and its provider list).
pub(crate) const AI_HOSTS: &[&str] = &[
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "openrouter.ai",
    "api.groq.com",
    "api.x.ai",
    "api.deepseek.com",
    "api.moonshot.cn",
    "api.moonshot.ai",
    "dashscope.aliyuncs.com",
    "dashscope-intl.aliyuncs.com",
    "api.siliconflow.cn",
    "api.mistral.ai",
    "api.together.xyz",
    "api.cerebras.ai",
    "open.bigmodel.cn",
    "api.z.ai",
    "api.minimax.chat",
    "api.minimaxi.com",
    "api.volcengine.com",
    "ark.cn-beijing.volces.com",
    "*.openai.azure.com",
    "huggingface.co",
    "*.huggingface.co",
];

use Check::*;
use Severity::*;
use ThreatType::*;

/// Outbound: secrets and sensitive files leaving.
pub(crate) const EXFIL: &[Rule] = &[
    Rule {
        id: "ai_api_key", // OpenAI project, service-account and admin keys
        threat: Exfil,
        severity: High,
        keywords: &["sk-proj-", "sk-svcacct-", "sk-admin-"],
        regex: r"(?-u)\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20,200}",
        secret: true,
        check: Secret(3.0),
        provider: Some(OPENAI),
    },
    Rule {
        id: "ai_api_key", // OpenAI legacy user keys carry `T3BlbkFJ` ("OpenAI" in base64)
        threat: Exfil,
        severity: High,
        keywords: &["t3blbkfj"],
        regex: r"(?-u)\bsk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}\b",
        secret: true,
        check: Secret(3.0),
        provider: Some(OPENAI),
    },
    Rule {
        id: "ai_api_key", // Anthropic API, admin and OAuth tokens
        threat: Exfil,
        severity: High,
        keywords: &["sk-ant-"],
        regex: r"(?-u)\bsk-ant-(?:api03|admin01|oat01|ort01)-[A-Za-z0-9_\-]{32,150}",
        secret: true,
        check: Secret(3.0),
        provider: Some(ANTHROPIC),
    },
    Rule {
        id: "ai_api_key", // Google (Gemini) API keys
        threat: Exfil,
        severity: High,
        keywords: &["aiza"],
        regex: r"(?-u)\bAIza[0-9A-Za-z_\-]{35}\b",
        secret: true,
        check: Secret(3.0),
        provider: Some(GOOGLE),
    },
    Rule {
        id: "ai_api_key", // Hugging Face user access tokens
        threat: Exfil,
        severity: High,
        keywords: &["hf_"],
        regex: r"(?-u)\bhf_[A-Za-z0-9]{34,40}\b",
        secret: true,
        check: Secret(3.5),
        provider: Some(HUGGINGFACE),
    },
    Rule {
        id: "ai_api_key", // OpenRouter
        threat: Exfil,
        severity: High,
        keywords: &["sk-or-v1-"],
        regex: r"(?-u)\bsk-or-v1-[0-9a-f]{64}\b",
        secret: true,
        check: Secret(3.0),
        provider: Some(OPENROUTER),
    },
    Rule {
        id: "ai_api_key", // Groq
        threat: Exfil,
        severity: High,
        keywords: &["gsk_"],
        regex: r"(?-u)\bgsk_[A-Za-z0-9]{52}\b",
        secret: true,
        check: Secret(3.5),
        provider: Some(GROQ),
    },
    Rule {
        id: "ai_api_key", // xAI
        threat: Exfil,
        severity: High,
        keywords: &["xai-"],
        regex: r"(?-u)\bxai-[A-Za-z0-9]{80}\b",
        secret: true,
        check: Secret(3.5),
        provider: Some(XAI),
    },
    Rule {
        id: "ai_api_key", // OpenAI-compatible `sk-<32..64 alnum>` (DeepSeek, Moonshot, DashScope ...)
        threat: Exfil,
        severity: High,
        keywords: &["sk-"],
        regex: r"(?-u)\bsk-[A-Za-z0-9]{32,64}\b",
        secret: true,
        check: Secret(3.5),
        provider: Some(OPENAI_COMPATIBLE),
    },
    Rule {
        id: "tavily_api_key",
        threat: Exfil,
        severity: High,
        keywords: &["tvly-"],
        regex: r"(?-u)\btvly-(?:dev-|prod-)?[A-Za-z0-9]{32}\b",
        secret: true,
        check: Secret(3.5),
        provider: Some(TAVILY),
    },
    Rule {
        id: "aws_access_key",
        threat: Exfil,
        severity: High,
        keywords: &["akia", "asia", "abia", "acca"],
        regex: r"(?-u)\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        secret: true,
        check: Secret(2.5),
        provider: None,
    },
    Rule {
        id: "aws_secret_key",
        threat: Exfil,
        severity: Critical,
        keywords: &["secret_access_key", "secretaccesskey"],
        regex: r#"(?-u)(?i)aws_?(?:secret_access_key|secretaccesskey)["']?\s{0,4}[:=]\s{0,4}["']?(?P<v>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|\z)"#,
        secret: true,
        check: Secret(3.5),
        provider: None,
    },
    Rule {
        id: "github_token",
        threat: Exfil,
        severity: High,
        keywords: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        regex: r"(?-u)\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{60,100})\b",
        secret: true,
        check: Secret(3.0),
        provider: None,
    },
    Rule {
        id: "gitlab_token",
        threat: Exfil,
        severity: High,
        keywords: &["glpat-"],
        regex: r"(?-u)\bglpat-[A-Za-z0-9_\-]{20,60}",
        secret: true,
        check: Secret(3.0),
        provider: None,
    },
    Rule {
        id: "slack_token",
        threat: Exfil,
        severity: High,
        keywords: &["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-", "xapp-"],
        regex: r"(?-u)\b(?:xox[abprs]-[0-9]{6,15}-[A-Za-z0-9\-]{10,120}|xapp-[0-9]-[A-Za-z0-9\-]{10,120})",
        secret: true,
        check: Secret(3.0),
        provider: None,
    },
    Rule {
        id: "stripe_key",
        threat: Exfil,
        severity: High,
        keywords: &["sk_live_", "rk_live_"],
        regex: r"(?-u)\b[rs]k_live_[A-Za-z0-9]{20,99}\b",
        secret: true,
        check: Secret(3.0),
        provider: None,
    },
    Rule {
        id: "telegram_bot_token", // the secret half always starts with `AA`
        threat: Exfil,
        severity: High,
        keywords: &[":aa"],
        regex: r"(?-u)(?P<v>[0-9]{8,10}:AA[A-Za-z0-9_\-]{33})(?:[^A-Za-z0-9_\-]|\z)",
        secret: true,
        check: Secret(3.0),
        provider: Some(TELEGRAM),
    },
    Rule {
        id: "private_key_pem", // the value includes the start of the body, so two keys fingerprint apart
        threat: Exfil,
        severity: Critical,
        keywords: &["private key-----", "private key block-----"],
        regex: r"(?-u)-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----(?:\\[rn]|[\r\n\t ]){0,4}[A-Za-z0-9+/=]{0,64}",
        secret: true,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "ssh_key_file",
        threat: Exfil,
        severity: High,
        keywords: &["id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".ssh/authorized_keys"],
        regex: r"(?-u)(?:\bid_(?:rsa|dsa|ecdsa|ed25519)(?:_sk)?(?:\.pub)?\b|\.ssh/authorized_keys\b)",
        secret: false,
        check: NotPublicKey,
        provider: None,
    },
    Rule {
        id: "unix_sensitive",
        threat: Exfil,
        severity: High,
        keywords: &[
            "/etc/shadow",
            "/etc/passwd",
            "/etc/sudoers",
            "/etc/gshadow",
            "/etc/master.passwd",
            "/proc/self/environ",
        ],
        regex: r"(?-u)/(?:etc/(?:shadow|passwd|sudoers|gshadow|master\.passwd)|proc/self/environ)\b",
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "shadow_hash", // crypt(3) hashes as in /etc/shadow: sha512, sha256, yescrypt, bcrypt
        threat: Exfil,
        severity: Critical,
        keywords: &["$6$", "$5$", "$y$", "$2a$", "$2b$", "$2y$"],
        regex: r"(?-u)\$(?:6|5|y|2[aby])\$[./A-Za-z0-9$]{2,40}\$[./A-Za-z0-9]{22,90}",
        secret: true,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "passwd_content", // a root line of /etc/passwd
        threat: Exfil,
        severity: High,
        keywords: &["root:x:0:0:", "root:*:0:0:", "root:!:0:0:"],
        regex: r"(?-u)\broot:[x*!]:0:0:[^:\n]{0,64}:/[^:\n]{0,64}:/[^\s:]{1,64}",
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "dotenv_file",
        threat: Exfil,
        severity: Medium,
        keywords: &[".env"],
        regex: r#"(?-u)(?:^|[\s/"'=(:`,\[])(?P<v>\.env(?:\.[a-z]{1,12})?)(?:[\s"'),`;\]]|\z)"#,
        secret: false,
        check: NotTemplate,
        provider: None,
    },
    Rule {
        id: "cloud_credentials_file",
        threat: Exfil,
        severity: High,
        keywords: &[
            ".aws/credentials",
            ".config/gcloud",
            ".kube/config",
            ".netrc",
            ".pgpass",
            ".docker/config.json",
            ".git-credentials",
            "application_default_credentials.json",
        ],
        regex: r"(?-u)(?:\.aws/credentials|\.config/gcloud\b|\.kube/config\b|\.netrc\b|\.pgpass\b|\.docker/config\.json|\.git-credentials\b|application_default_credentials\.json)",
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "dotenv_secret", // `NAME=value` lines whose name says secret, as in .env files and `env` output
        threat: Exfil,
        severity: High,
        // The name must end in the secret word and `=` must follow at once (as .env files write it), so
        // the keywords can include the `=`: bare "key" or "token" would wake this rule on every chat.
        keywords: &["key=", "token=", "secret=", "password=", "passwd=", "pwd=", "credential=", "credentials="],
        regex: r#"(?-u)(?m)^[ \t]{0,8}(?:export[ \t]{1,4})?[A-Z0-9_]{0,40}(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD|PWD|CREDENTIALS?)=["']?(?P<v>[^\s"'#]{8,200})"#,
        secret: true,
        check: Secret(2.5),
        provider: None,
    },
    Rule {
        id: "picoclaw_config", // CONTRACT §8: the files that hold Picoclaw secrets, tokens and memory
        threat: Exfil,
        severity: High,
        keywords: &[".picoclaw", "picoclaw_home", "picoclaw_ed25519"],
        regex: r"(?-u)(?:(?:\.picoclaw|\$\{?PICOCLAW_HOME\}?)/(?:config\.json|auth\.json|\.security\.yml|\.picoclaw\.pid|launcher-auth\.db|launcher-config\.json|workspace/(?:memory|sessions)/)|picoclaw_ed25519\.key)",
        secret: false,
        check: Plain,
        provider: None,
    },
];

/// Inbound: hostile commands arriving in replies.
pub(crate) const INJECTION: &[Rule] = &[
    Rule {
        id: "pipe_to_shell", // curl/wget ... | [sudo] sh
        threat: Injection,
        severity: High,
        keywords: &["curl", "wget"],
        regex: r"(?-u)\b(?:curl|wget)\s[^|\n;&]{0,200}\|\s{0,4}(?:sudo\s{1,4}(?:-\S{1,10}\s{1,4}){0,3})?(?:/(?:usr/)?bin/)?(?:ba|z|da|k)?sh\b",
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "pipe_to_shell", // sh -c "$(curl ...)", bash <(curl ...)
        threat: Injection,
        severity: High,
        keywords: &["curl", "wget"],
        regex: r#"(?-u)\b(?:ba|z|da|k)?sh\s{1,4}(?:-c\s{1,4}["']?\$\(|<\(\s{0,4})(?:curl|wget)\b"#,
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "pipe_to_shell", // base64 -d | sh
        threat: Injection,
        severity: High,
        keywords: &["base64"],
        regex: r"(?-u)\bbase64\s{1,4}(?:-d|--decode|-D)\b[^|\n;&]{0,100}\|\s{0,4}(?:sudo\s{1,4})?(?:/(?:usr/)?bin/)?(?:ba|z|da|k)?sh\b",
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "shell_exec", // sh|bash|zsh -c/-i with a payload
        threat: Injection,
        severity: Medium,
        keywords: &["sh -", "sh\t-"],
        regex: r#"(?-u)\b(?:ba|z|da|k)?sh[ \t]-(?:c|i|ic|ci|lc|cl|li|il|ilc)\s{1,4}["']?[^\s"'][^\n]{0,100}"#,
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "reverse_shell", // bash's /dev/tcp and /dev/udp
        threat: Injection,
        severity: Critical,
        keywords: &["/dev/tcp/", "/dev/udp/"],
        regex: r"(?-u)/dev/(?:tcp|udp)/[A-Za-z0-9.\-:\[\]]{1,100}/[0-9]{1,5}",
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "reverse_shell", // nc/ncat/netcat with -e/-c or piped to a shell
        threat: Injection,
        severity: Critical,
        keywords: &["nc ", "nc\t", "ncat", "netcat"],
        regex: r"(?-u)\b(?:nc|ncat|netcat)[ \t](?:(?:[^\n|;&]{0,120}\s)?(?:-[a-z]{0,4}[ec]\s{1,4}\S{0,20}(?:sh|cmd(?:\.exe)?)\b|--(?:sh-)?exec\b)|[^\n|;&]{0,120}\|\s{0,4}(?:/bin/)?(?:ba|z)?sh\b)",
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "reverse_shell", // mkfifo + nc
        threat: Injection,
        severity: Critical,
        keywords: &["mkfifo"],
        regex: r"(?-u)\bmkfifo\s[^\n]{0,200}\b(?:nc|ncat|netcat|telnet|openssl\s{1,4}s_client)\b",
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "reverse_shell", // socat with exec:
        threat: Injection,
        severity: Critical,
        keywords: &["socat"],
        regex: r"(?-u)(?i)\bsocat\s[^\n]{0,200}\b(?:exec|system):",
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "reverse_shell", // python/perl/php/ruby socket one-liners
        threat: Injection,
        severity: Critical,
        keywords: &["socket", "fsockopen"],
        regex: r"(?-u)\b(?:python[23]?|perl|php|ruby)\s{1,4}(?:-[A-Za-z]{1,12}\s{1,4}){0,3}-?[A-Za-z]{0,12}[cer]\s{0,4}[^\n]{0,300}?(?i:socket|fsockopen)",
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "reverse_shell", // PowerShell TCPClient
        threat: Injection,
        severity: Critical,
        keywords: &["tcpclient"],
        regex: r"(?-u)(?i)New-Object\s{1,4}(?:System\.)?Net\.Sockets\.TCPClient\b",
        secret: false,
        check: Plain,
        provider: None,
    },
    Rule {
        id: "destructive_rm", // rm -rf on /, /*, ~, $HOME, a top-level system dir, or --no-preserve-root
        threat: Injection,
        severity: High,
        keywords: &["rm -", "rm\t-"],
        regex: r#"(?-u)\brm[ \t](?:-[A-Za-z]{1,8}|--[a-z\-]{3,20})(?:\s{1,4}(?:-[A-Za-z]{1,8}|--[a-z\-]{3,20})){0,3}\s{1,4}(?:--no-preserve-root\b|["']?(?:/|/\*|~|~/|~/\*|\$HOME|\$HOME/|\$HOME/\*|\$\{HOME\}|\$\{HOME\}/|\$\{HOME\}/\*|/(?:bin|boot|dev|etc|home|lib|lib64|opt|root|sbin|srv|usr|var)/?\*?)["']?(?:[\s;&|)`]|\z))"#,
        secret: false,
        check: Recursive,
        provider: None,
    },
    Rule {
        id: "ssh_key_inject", // echo "ssh-ed25519 AAAA..." >> ~/.ssh/authorized_keys (or | tee -a)
        threat: Injection,
        severity: Critical,
        keywords: &["authorized_keys"],
        regex: r#"(?-u)(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp[0-9]{3}|sk-ssh-ed25519@openssh\.com)\s{1,4}[A-Za-z0-9+/]{16,1000}={0,3}[^\n>|]{0,100}(?:>>?|\|\s{0,4}(?:sudo\s{1,4})?tee\s{1,4}(?:-a\s{1,4})?)\s{0,4}["']?[^\s"']{0,100}authorized_keys"#,
        secret: false,
        check: Plain,
        provider: None,
    },
];

/// Substrings (lowercase) of documented example values and placeholders: never a real secret.
const EXAMPLE_MARKERS: &[&str] = &[
    "example",
    "xxxxxxxx",
    "abcdefgh",
    "12345678",
    "01234567",
    "placeholder",
    "your_",
    "your-",
    "yourkey",
    "changeme",
    "dummy",
    "redacted",
    "<",
    "${",
];

/// Whether `value` passes the rule's validator.
pub(crate) fn check(check: Check, value: &[u8]) -> bool {
    match check {
        Check::Plain => true,
        Check::Secret(floor) => !is_example(value) && entropy(value) >= floor,
        Check::NotPublicKey => !value.ends_with(b".pub"),
        Check::NotTemplate => {
            let lower = value.to_ascii_lowercase();
            !["example", "sample", "template", "dist", "defaults"].iter().any(|t| contains(&lower, t.as_bytes()))
        }
        Check::Recursive => {
            // Flags sit between `rm` and the target; the regex allows any, the recursive one is required.
            value.split(|b| b.is_ascii_whitespace()).any(|arg| {
                arg == b"--recursive"
                    || (arg.len() > 1
                        && arg[0] == b'-'
                        && arg[1] != b'-'
                        && arg.iter().any(|b| *b == b'r' || *b == b'R'))
            })
        }
    }
}

fn is_example(value: &[u8]) -> bool {
    let lower = value.to_ascii_lowercase();
    EXAMPLE_MARKERS.iter().any(|m| contains(&lower, m.as_bytes()))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// Shannon entropy in bits per byte.
pub(crate) fn entropy(value: &[u8]) -> f64 {
    if value.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for b in value {
        counts[usize::from(*b)] += 1;
    }
    let n = value.len() as f64;
    counts.iter().filter(|c| **c > 0).map(|c| f64::from(*c) / n).map(|p| -p * p.log2()).sum()
}

/// Whether `host` matches a pattern (`name` exactly or `*.domain` for any subdomain).
pub(crate) fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => {
            host.len() > domain.len() + 1
                && host.ends_with(domain)
                && host.as_bytes().get(host.len() - domain.len() - 1) == Some(&b'.')
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}
