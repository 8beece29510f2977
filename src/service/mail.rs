//! Outgoing e-mail over SMTP (lettre). Messages are sent in the background, so that neither SMTP
//! latency nor whether a message was sent at all shows in the response time.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpSecurity};
use crate::error::{Error, Result};

pub struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(config: &SmtpConfig) -> Result<Self> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| Error::internal(format!("smtp.from: {e}")))?;
        let Some(host) = &config.host else {
            return Ok(Self {
                transport: None,
                from,
            });
        };
        let builder = match config.security {
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| Error::internal(format!("smtp: {e}")))?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| Error::internal(format!("smtp: {e}")))?,
        };
        let mut builder = builder
            .port(config.port)
            .timeout(Some(Duration::from_secs(config.timeout_secs)));
        if let (Some(user), Some(pass)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(Self {
            transport: Some(builder.build()),
            from,
        })
    }

    pub fn enabled(&self) -> bool {
        self.transport.is_some()
    }

    /// Builds the message now (so a bad address fails the request) and sends it in the background.
    pub fn send_in_background(&self, to: &str, subject: &str, body: String) -> Result<()> {
        let Some(transport) = self.transport.clone() else {
            return Err(Error::ThreepidMediumNotSupported(
                "e-mail is not configured on this server".into(),
            ));
        };
        let to: Mailbox = to
            .parse()
            .map_err(|_| Error::InvalidParam("invalid e-mail address".into()))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .body(body)
            .map_err(Error::internal)?;
        tokio::spawn(async move {
            if let Err(e) = transport.send(message).await {
                tracing::warn!(error = %e, "sending e-mail failed");
            }
        });
        Ok(())
    }
}
