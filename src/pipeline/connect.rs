//! CONNECT: 200, then upgrade, then copy bytes both ways (hyper's upgrade mechanics).

use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::audit::recorder::Recorder;
use crate::error::Side;
use crate::upstream::tunnel::{TunnelLimits, tunnel};

/// Run the tunnel once the client connection is upgraded; the recorder is finished (and the
/// audit record emitted) when the tunnel ends.
pub async fn run(
    req: Request<Incoming>,
    upstream: TcpStream,
    limits: TunnelLimits,
    mut rec: Recorder,
) {
    match hyper::upgrade::on(req).await {
        Ok(upgraded) => {
            let counters = rec.bytes.clone();
            let stats = tunnel(TokioIo::new(upgraded), upstream, limits, &counters).await;
            if stats.idle_timeout {
                rec.rec().error = Some("tunnel idle timeout".into());
            } else if stats.lifetime_exceeded {
                rec.rec().error = Some("tunnel lifetime exceeded".into());
            }
        }
        Err(e) => {
            let r = rec.rec();
            r.error_side = Some(Side::Downstream);
            r.error = Some(format!("upgrade failed: {e}"));
        }
    }
    rec.finish();
}
