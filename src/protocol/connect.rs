//! CONNECT: 200, then upgrade, then copy bytes both ways (hyper's upgrade mechanics).

use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::record::Recorder;
use crate::upstream::tunnel::tunnel;

/// Run the tunnel once the client connection is upgraded; the recorder is finished (and the
/// audit record emitted) when the tunnel ends.
pub async fn run(req: Request<Incoming>, upstream: TcpStream, idle: Duration, mut rec: Recorder) {
    match hyper::upgrade::on(req).await {
        Ok(upgraded) => {
            let counters = rec.bytes.clone();
            let stats = tunnel(TokioIo::new(upgraded), upstream, idle, &counters).await;
            if stats.idle_timeout {
                rec.rec().error = Some("tunnel idle timeout".into());
            }
        }
        Err(e) => {
            let r = rec.rec();
            r.error_side = Some("downstream".into());
            r.error = Some(format!("upgrade failed: {e}"));
        }
    }
    rec.finish();
}
