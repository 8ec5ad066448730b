//! The user agent reduced to classes (browser, major version, OS, device) and a bot
//! label with its reason. The raw string is used here and for the cookieless id, and
//! is never stored.

use spur_schemas::record::{Agent, DeviceClass};

/// Classifies user agents; built once, shared by all requests.
pub struct AgentClassifier {
    parser: woothee::parser::Parser,
    bots: isbot::Bots,
}

impl std::fmt::Debug for AgentClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClassifier").finish_non_exhaustive()
    }
}

impl Default for AgentClassifier {
    fn default() -> Self {
        Self {
            parser: woothee::parser::Parser::new(),
            bots: isbot::Bots::default(),
        }
    }
}

impl AgentClassifier {
    pub fn classify(&self, ua: &str) -> Agent {
        let ua = ua.trim();
        if ua.is_empty() {
            return Agent {
                browser: "unknown".into(),
                browser_version: String::new(),
                os: "unknown".into(),
                device: DeviceClass::Bot,
                bot: Some("empty_user_agent".into()),
            };
        }
        let parsed = self.parser.parse(ua);
        let (browser, version, os, category) = match &parsed {
            Some(r) => (r.name, r.version, r.os, r.category),
            None => ("unknown", "", "unknown", "UNKNOWN"),
        };
        let major = version.split('.').next().unwrap_or_default();
        let mut bot = None;
        if category == "crawler" {
            bot = Some(format!(
                "crawler:{}",
                browser.to_lowercase().replace(' ', "_")
            ));
        } else if self.bots.is_bot(ua) {
            bot = Some("user_agent_pattern".into());
        } else if ua.len() > 1024 {
            bot = Some("oversized_user_agent".into());
        }
        let device = if bot.is_some() {
            DeviceClass::Bot
        } else {
            match category {
                "pc" => DeviceClass::Desktop,
                "smartphone" | "mobilephone"
                    if os == "iPad" || (os == "Android" && !ua.contains("Mobile")) =>
                {
                    DeviceClass::Tablet
                }
                "smartphone" | "mobilephone" => DeviceClass::Mobile,
                _ => DeviceClass::Other,
            }
        };
        Agent {
            browser: clip(browser),
            browser_version: clip(major),
            os: clip(os),
            device,
            bot,
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_browsers_and_bots() {
        let c = AgentClassifier::default();
        let chrome = c.classify(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        );
        assert_eq!(chrome.browser, "Chrome");
        assert_eq!(chrome.browser_version, "131");
        assert_eq!(chrome.device, DeviceClass::Desktop);
        assert_eq!(chrome.bot, None);

        let iphone = c.classify(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
        );
        assert_eq!(iphone.device, DeviceClass::Mobile);

        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
            "",
        ] {
            let agent = c.classify(ua);
            assert!(agent.bot.is_some(), "{ua}");
            assert_eq!(agent.device, DeviceClass::Bot, "{ua}");
        }
    }
}
