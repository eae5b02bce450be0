//! The server certificate in a real TLS handshake: rustls client trusting only `ca.crt`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::util::*;

/// Serves `attempts` TLS connections on loopback with server.crt, answering "ok".
fn serve(d: &DataDir, attempts: usize) -> (u16, thread::JoinHandle<()>) {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(d.certs().join("server.crt"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(d.certs().join("server.key")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        for stream in listener.incoming().take(attempts) {
            let Ok(mut sock) = stream else { continue };
            let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            let mut buf = [0u8; 4];
            if tls.read_exact(&mut buf).is_ok() {
                let _ = tls.write_all(b"ok");
                let _ = tls.flush();
            }
        }
    });
    (port, handle)
}

/// Connects to `port` expecting the certificate to be valid for `name`.
fn handshake(d: &DataDir, port: u16, name: &str) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(d.certs().join("ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let server_name = ServerName::try_from(name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(config, server_name).unwrap();
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"ping").map_err(|e| e.to_string())?;
    let mut reply = [0u8; 2];
    tls.read_exact(&mut reply).map_err(|e| e.to_string())?;
    assert_eq!(&reply, b"ok");
    Ok(())
}

#[test]
fn rustls_trusts_server_cert_for_its_sans_only() {
    let d = DataDir::bootstrapped();
    let (port, server) = serve(&d, 3);
    handshake(&d, port, "kubernetes.default.svc").expect("valid for kubernetes.default.svc");
    handshake(&d, port, "127.0.0.1").expect("valid for 127.0.0.1");
    let err = handshake(&d, port, "not-in-the-sans.example").unwrap_err();
    assert!(err.contains("certificate not valid for name"), "{err}");
    server.join().unwrap();
}
