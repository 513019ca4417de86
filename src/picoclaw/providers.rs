//! Where each kind of Picoclaw secret legitimately goes: one small table per kind.
//!
//! A destination is a host (or `*.domain`) plus how the secret travels there: a lowercase header name,
//! `path` (anywhere in the request target, path or query: Telegram's `/bot<token>/`, WeCom's
//! `?corpsecret=`), or `body` (the HTTP body or a WebSocket message: Tavily's JSON `api_key`, OAuth refresh
//! forms, Discord's gateway IDENTIFY). `path` and `body` are the two non-header names the detector's
//! [`AllowedUse`](crate::detect::AllowedUse) understands; every other name is a header.
//!
//! Sources, read in sipeed/picoclaw (never copied):
//! - model prefixes and default `api_base`: `pkg/providers/factory_provider.go` (`protocolMetaByName`,
//!   `CreateProviderFromConfig`), aliases (`gpt`, `claude`, `glm`, `google`) from
//!   `pkg/providers/builtin_resolvers.go`;
//! - channel secrets: `pkg/config/security.go` and `pkg/config/config_channel.go`;
//! - web search and skills keys: `pkg/config/tools.go`, `pkg/config/SECURITY_CONFIG.md`;
//! - OAuth credentials: `pkg/auth/store.go`, `pkg/auth/oauth.go`.

/// How a model's key is sent, by protocol family.
pub const OPENAI_HEADERS: &[&str] = &["authorization"];
/// Anthropic's messages API takes `x-api-key`; its OAuth tokens and compatible gateways use `authorization`.
pub const ANTHROPIC_HEADERS: &[&str] = &["x-api-key", "authorization"];
/// Picoclaw's `gemini/` prefix goes through the OpenAI-compatible client (`authorization`); Google's own SDK
/// sends `x-goog-api-key`. Gemini also accepts `?key=` in the URL, which Picoclaw never uses: a Gemini key in
/// a URL is therefore NOT an allowed use and gives a finding (keys in URLs end up in logs).
pub const GEMINI_HEADERS: &[&str] = &["authorization", "x-goog-api-key"];
/// Azure OpenAI's `api-key` header.
pub const AZURE_HEADERS: &[&str] = &["api-key", "authorization"];

/// Model prefix (the part of `model` before `/`; none means `openai`) → default API host.
/// `None` marks a prefix that has no network host of its own (local CLIs, AWS SDK credentials).
pub const MODEL_HOSTS: &[(&str, Option<&str>)] = &[
    ("openai", Some("api.openai.com")),
    ("gpt", Some("api.openai.com")),
    ("anthropic", Some("api.anthropic.com")),
    ("anthropic-messages", Some("api.anthropic.com")),
    ("claude", Some("api.anthropic.com")),
    ("gemini", Some("generativelanguage.googleapis.com")),
    ("google", Some("generativelanguage.googleapis.com")),
    ("openrouter", Some("openrouter.ai")),
    ("groq", Some("api.groq.com")),
    ("zhipu", Some("open.bigmodel.cn")),
    ("glm", Some("open.bigmodel.cn")),
    ("nvidia", Some("integrate.api.nvidia.com")),
    ("moonshot", Some("api.moonshot.cn")),
    ("deepseek", Some("api.deepseek.com")),
    ("cerebras", Some("api.cerebras.ai")),
    ("mistral", Some("api.mistral.ai")),
    ("venice", Some("api.venice.ai")),
    ("novita", Some("api.novita.ai")),
    ("shengsuanyun", Some("router.shengsuanyun.com")),
    ("vivgrid", Some("api.vivgrid.com")),
    ("volcengine", Some("ark.cn-beijing.volces.com")),
    ("qwen", Some("dashscope.aliyuncs.com")),
    ("qwen-intl", Some("dashscope-intl.aliyuncs.com")),
    ("qwen-international", Some("dashscope-intl.aliyuncs.com")),
    ("dashscope-intl", Some("dashscope-intl.aliyuncs.com")),
    ("qwen-us", Some("dashscope-us.aliyuncs.com")),
    ("dashscope-us", Some("dashscope-us.aliyuncs.com")),
    ("coding-plan", Some("coding-intl.dashscope.aliyuncs.com")),
    ("alibaba-coding", Some("coding-intl.dashscope.aliyuncs.com")),
    ("qwen-coding", Some("coding-intl.dashscope.aliyuncs.com")),
    ("coding-plan-anthropic", Some("coding-intl.dashscope.aliyuncs.com")),
    ("alibaba-coding-anthropic", Some("coding-intl.dashscope.aliyuncs.com")),
    ("avian", Some("api.avian.io")),
    ("minimax", Some("api.minimaxi.com")),
    ("longcat", Some("api.longcat.chat")),
    ("modelscope", Some("api-inference.modelscope.cn")),
    ("mimo", Some("api.xiaomimimo.com")),
    // Local servers by default: Go never proxies these, `doctor` says so.
    ("ollama", Some("localhost")),
    ("lmstudio", Some("localhost")),
    ("vllm", Some("localhost")),
    ("litellm", Some("localhost")),
    ("github-copilot", Some("localhost")),
    ("copilot", Some("localhost")),
    // Azure needs an explicit api_base; Bedrock uses AWS SDK credentials; the CLIs run as child processes.
    ("azure", None),
    ("azure-openai", None),
    ("bedrock", None),
    ("antigravity", None),
    ("claude-cli", None),
    ("claudecli", None),
    ("codex-cli", None),
    ("codexcli", None),
];

/// Model prefixes that run a local CLI as a child process (it inherits the proxy variables, nothing more).
pub const CLI_PREFIXES: &[&str] = &["claude-cli", "claudecli", "codex-cli", "codexcli"];

/// The protocol of a `model` string: the text before the first `/`, else `openai` (Picoclaw's default).
pub fn protocol_of(model: &str) -> String {
    match model.trim().split_once('/') {
        Some((p, _)) => p.trim().to_ascii_lowercase(),
        None => "openai".to_owned(),
    }
}

/// Default host for a model prefix: `Some(Some(host))` known with a host, `Some(None)` known without one,
/// `None` unknown to Picoclaw.
pub fn model_default_host(protocol: &str) -> Option<Option<&'static str>> {
    MODEL_HOSTS.iter().find(|(p, _)| *p == protocol).map(|(_, h)| *h)
}

/// The headers a model key travels in, by protocol.
pub fn model_headers(protocol: &str) -> &'static [&'static str] {
    match protocol {
        "anthropic" | "anthropic-messages" | "claude" | "coding-plan-anthropic" | "alibaba-coding-anthropic" => {
            ANTHROPIC_HEADERS
        }
        "gemini" | "google" => GEMINI_HEADERS,
        "azure" | "azure-openai" => AZURE_HEADERS,
        _ => OPENAI_HEADERS,
    }
}

/// One legitimate destination: (host or `*.domain`, header name or `path` or `body`).
pub type Dest = (&'static str, &'static str);
/// A secret field of a channel and its destinations.
pub type Field = (&'static str, &'static [Dest]);

/// Channel type → secret field → where it goes. A field listed with no destinations is never sent by
/// Picoclaw (webhook verification keys, the gateway's own Pico token): any sighting is a leak. Hosts the
/// channel settings name (`base_url`, `homeserver`, `url`, `ws_url`) are added with the same ways.
pub const CHANNELS: &[(&str, &[Field])] = &[
    ("telegram", &[("token", &[("api.telegram.org", "path")])]),
    (
        "discord",
        &[("token", &[("discord.com", "authorization"), ("gateway.discord.gg", "body"), ("*.discord.gg", "body")])],
    ),
    (
        "slack",
        &[
            ("bot_token", &[("slack.com", "authorization"), ("slack.com", "body")]),
            ("app_token", &[("slack.com", "authorization"), ("slack.com", "body")]),
        ],
    ),
    (
        "feishu",
        &[
            ("app_secret", &[("open.feishu.cn", "body"), ("open.larksuite.com", "body")]),
            ("encrypt_key", &[]),
            ("verification_token", &[]),
        ],
    ),
    ("dingtalk", &[("client_secret", &[("api.dingtalk.com", "body"), ("oapi.dingtalk.com", "path")])]),
    ("qq", &[("app_secret", &[("bots.qq.com", "body")])]),
    (
        "line",
        &[
            ("channel_access_token", &[("api.line.me", "authorization"), ("api-data.line.me", "authorization")]),
            ("channel_secret", &[]),
        ],
    ),
    ("wecom", &[("token", &[]), ("encoding_aes_key", &[])]),
    ("wecom_app", &[("corp_secret", &[("qyapi.weixin.qq.com", "path")]), ("token", &[]), ("encoding_aes_key", &[])]),
    ("wecom_aibot", &[("secret", &[("openws.work.weixin.qq.com", "body")]), ("token", &[]), ("encoding_aes_key", &[])]),
    ("weixin", &[("token", &[("ilinkai.weixin.qq.com", "authorization")])]),
    ("matrix", &[("access_token", &[])]),
    ("mattermost", &[("token", &[])]),
    ("onebot", &[("access_token", &[])]),
    ("vk", &[("token", &[("api.vk.com", "body"), ("api.vk.com", "path")])]),
    ("pico", &[("token", &[])]),
    ("pico_client", &[("token", &[])]),
    ("irc", &[("password", &[]), ("nickserv_password", &[]), ("sasl_password", &[])]),
];

/// Settings keys read as secrets in a channel whose type the table does not know.
pub const GENERIC_CHANNEL_SECRET_FIELDS: &[&str] = &[
    "token",
    "bot_token",
    "app_token",
    "access_token",
    "channel_access_token",
    "app_secret",
    "client_secret",
    "corp_secret",
    "secret",
    "channel_secret",
    "encrypt_key",
    "encoding_aes_key",
    "verification_token",
    "password",
    "api_key",
];

/// Channel settings keys that name the channel's own server; its host becomes an allowed destination.
pub const CHANNEL_URL_FIELDS: &[&str] = &["base_url", "homeserver", "url", "ws_url", "server_url"];

/// `tools.web.<name>` → where its keys go (a `base_url` host is added with the same ways).
pub const WEB_SEARCH: &[(&str, &[Dest])] = &[
    ("brave", &[("api.search.brave.com", "x-subscription-token")]),
    // Tavily reads `api_key` from the JSON body; newer clients also send a Bearer header.
    ("tavily", &[("api.tavily.com", "body"), ("api.tavily.com", "authorization")]),
    ("perplexity", &[("api.perplexity.ai", "authorization")]),
    ("glm_search", &[("open.bigmodel.cn", "authorization")]),
    ("baidu_search", &[("qianfan.baidubce.com", "authorization")]),
];

/// `tools.skills.github.token` destinations.
pub const GITHUB: &[Dest] = &[
    ("api.github.com", "authorization"),
    ("github.com", "authorization"),
    ("raw.githubusercontent.com", "authorization"),
    ("codeload.github.com", "authorization"),
];

/// ClawHub registry `auth_token` destinations (the registry client connects directly, see `doctor`).
pub const CLAWHUB: &[Dest] = &[("clawhub.ai", "authorization")];

/// `auth.json` provider → (access-token destinations, refresh-token destinations). Refresh tokens travel in
/// the form body of the token endpoint.
pub const OAUTH: &[(&str, &[Dest], &[Dest])] = &[
    (
        "openai",
        &[("chatgpt.com", "authorization"), ("api.openai.com", "authorization")],
        &[("auth.openai.com", "body")],
    ),
    (
        "anthropic",
        &[("api.anthropic.com", "authorization")],
        &[("console.anthropic.com", "body"), ("platform.claude.com", "body"), ("claude.ai", "body")],
    ),
    ("google-antigravity", &[("*.googleapis.com", "authorization")], &[("oauth2.googleapis.com", "body")]),
    (
        "qwen",
        &[("portal.qwen.ai", "authorization"), ("dashscope.aliyuncs.com", "authorization")],
        &[("chat.qwen.ai", "body")],
    ),
];

/// The lowercase host of a URL or `host:port` text, without brackets or port; `None` when there is none
/// (empty, or a bare word like an AWS region).
pub fn url_host(text: &str) -> Option<String> {
    let t = text.trim();
    let rest = match t.split_once("://") {
        Some((_, r)) => r,
        None if t.contains('.') || t.contains(':') || t.eq_ignore_ascii_case("localhost") => t,
        None => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        None
    } else {
        Some(host)
    }
}

/// Whether Go's `ProxyFromEnvironment` skips this host: exactly `localhost`, or a loopback IP literal.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("https://API.openai.com/v1").as_deref(), Some("api.openai.com"));
        assert_eq!(url_host("http://localhost:11434/v1").as_deref(), Some("localhost"));
        assert_eq!(url_host("http://u:p@[::1]:8000/x").as_deref(), Some("::1"));
        assert_eq!(url_host("localhost:4321").as_deref(), Some("localhost"));
        assert_eq!(url_host("us-east-1"), None);
        assert_eq!(url_host(""), None);
        assert_eq!(url_host("https://"), None);
    }

    #[test]
    fn loopback_like_go() {
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("127.0.0.2"));
        assert!(is_loopback_host("::1"));
        // Go proxies these: only the literal name and loopback IPs are exempt.
        assert!(!is_loopback_host("foo.localhost"));
        assert!(!is_loopback_host("10.0.0.1"));
    }

    #[test]
    fn prefixes() {
        assert_eq!(protocol_of("openai/gpt-4o"), "openai");
        assert_eq!(protocol_of("gpt-4o"), "openai");
        assert_eq!(protocol_of("Anthropic/claude"), "anthropic");
        assert_eq!(model_default_host("groq"), Some(Some("api.groq.com")));
        assert_eq!(model_default_host("bedrock"), Some(None));
        assert_eq!(model_default_host("nonesuch"), None);
        assert_eq!(model_headers("anthropic"), ANTHROPIC_HEADERS);
        assert_eq!(model_headers("deepseek"), OPENAI_HEADERS);
    }

    #[test]
    fn every_table_header_is_lowercase() {
        let uses = CHANNELS
            .iter()
            .flat_map(|(_, f)| f.iter().flat_map(|(_, u)| u.iter()))
            .chain(WEB_SEARCH.iter().flat_map(|(_, u)| u.iter()))
            .chain(GITHUB.iter())
            .chain(CLAWHUB.iter())
            .chain(OAUTH.iter().flat_map(|(_, a, r)| a.iter().chain(r.iter())));
        for (host, header) in uses {
            assert_eq!(*header, header.to_ascii_lowercase(), "{host}");
            assert_eq!(*host, host.to_ascii_lowercase());
        }
    }
}
