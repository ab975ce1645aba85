//! LAN discovery beacons: one UDP socket per node on a port every node on the host
//! shares (SO_REUSEADDR + SO_REUSEPORT), sending to a broadcast address.
//!
//! The socket only carries bytes; proto builds and judges the beacons.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::state::{stopped, DriverDrop, Shared};
use crate::transport::Input;
use crate::BindError;

/// Largest beacon read; proto's beacons are far smaller, anything longer is truncated
/// and then refused by proto's decoder.
const BEACON_BYTES_MAX: usize = 2048;

/// Bind the shared beacon port on all IPv4 addresses.
pub(crate) fn bind(port: u16) -> Result<UdpSocket, BindError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let error = |io| BindError::Beacon { addr, io };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    socket.set_reuse_port(true).map_err(error)?;
    socket.set_broadcast(true).map_err(error)?;
    socket.set_nonblocking(true).map_err(error)?;
    socket.bind(&addr.into()).map_err(error)?;
    UdpSocket::from_std(socket.into()).map_err(error)
}

/// Read beacons and hand them to the driver until `stop` turns true.
pub(crate) async fn receive(
    socket: Arc<UdpSocket>,
    inputs: mpsc::Sender<Input>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; BEACON_BYTES_MAX];
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            received = socket.recv_from(&mut buffer) => match received {
                Ok((len, from)) => {
                    let bytes = buffer[..len].to_vec();
                    if inputs.try_send(Input::Beacon { from, bytes }).is_err() {
                        shared.counters.drop(DriverDrop::InputQueueFull);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "beacon socket read failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}
