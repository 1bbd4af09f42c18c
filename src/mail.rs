//! Outgoing email: SMTP when configured, otherwise a file outbox (`data/outbox/*.eml`) that a
//! developer — or a test — can read.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::MailConfig;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid mail configuration: {0}")]
    Config(String),
    #[error("invalid recipient address")]
    Recipient,
    #[error("the message could not be built: {0}")]
    Build(String),
    #[error("the message could not be sent: {0}")]
    Send(String),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(AsyncFileTransport<Tokio1Executor>),
}

/// A message: subject, plain text and HTML.
pub struct Email {
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Email {
    /// Renders a message from a plain-text and an HTML template.
    pub fn render(
        subject: impl Into<String>,
        text: &impl Template,
        html: &impl Template,
    ) -> Result<Self, MailError> {
        Ok(Self {
            subject: subject.into(),
            text: text.render().map_err(|e| MailError::Build(e.to_string()))?,
            html: html.render().map_err(|e| MailError::Build(e.to_string()))?,
        })
    }
}

#[derive(Clone)]
pub struct Mailer {
    transport: Arc<Transport>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    pub fn new(config: &MailConfig) -> Result<Self, MailError> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|_| MailError::Config("mail.from".into()))?;
        let transport = if config.smtp_host.is_empty() {
            std::fs::create_dir_all(&config.outbox).map_err(|e| {
                MailError::Config(format!("cannot create outbox {}: {e}", config.outbox))
            })?;
            Transport::Outbox(AsyncFileTransport::new(&config.outbox))
        } else {
            let host = config.smtp_host.as_str();
            let builder = match config.smtp_security.as_str() {
                "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
                "none" => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                    host,
                )),
                _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            }
            .map_err(|e| MailError::Config(e.to_string()))?;
            let mut builder = builder
                .port(config.smtp_port)
                .timeout(Some(Duration::from_secs(20)));
            if !config.smtp_username.is_empty() {
                builder = builder.credentials(Credentials::new(
                    config.smtp_username.clone(),
                    config.smtp_password.clone(),
                ));
            }
            Transport::Smtp(builder.build())
        };
        Ok(Self {
            transport: Arc::new(transport),
            from,
        })
    }

    /// Sends `email` to `to` and waits for the transport.
    pub async fn send(&self, to: &str, email: Email) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::Recipient)?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject)
            .multipart(MultiPart::alternative_plain_html(email.text, email.html))
            .map_err(|e| MailError::Build(e.to_string()))?;
        match self.transport.as_ref() {
            Transport::Smtp(t) => t
                .send(message)
                .await
                .map(drop)
                .map_err(|e| MailError::Send(e.to_string())),
            Transport::Outbox(t) => t
                .send(message)
                .await
                .map(drop)
                .map_err(|e| MailError::Send(e.to_string())),
        }
    }

    /// Sends in the background: the response does not wait for (or reveal, by its timing)
    /// the mail server. Failures are logged without the message's content.
    pub fn send_later(&self, to: String, email: Email, what: &'static str) {
        let mailer = self.clone();
        tokio::spawn(async move {
            if let Err(error) = mailer.send(&to, email).await {
                tracing::error!(%error, what, "email not sent");
            }
        });
    }
}
