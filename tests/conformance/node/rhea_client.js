// A plain AMQP 1.0 client (rhea) over WebSocket (subprotocol AMQPWSB10), driven by
// tests/conformance/test_amqp_rhea.py. SASL PLAIN with the IoT Hub username and a SAS token;
// one JSON object per line on stdout; exit 0 when done, 1 on any error.
//
//   node rhea_client.js <url> <ca-file> <username> <password> send <address> <count>
//   node rhea_client.js <url> <ca-file> <username> <password> receive <address> <count>
//   node rhea_client.js <url> <ca-file> <username> <password> attach <address>   (prints the attach outcome)
'use strict';

const fs = require('fs');
const rhea = require('rhea');
const WebSocket = require('ws');

const [url, caFile, username, password, role, address, countText] = process.argv.slice(2);
const count = Number(countText || '0');

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

const container = rhea.create_container({ id: 'rhea-conformance' });
const connect = container.websocket_connect(WebSocket);
const connection = container.connect({
  connection_details: connect(url, ['AMQPWSB10'], { ca: fs.readFileSync(caFile) }),
  username,
  password,
  hostname: 'localhost',
  reconnect: false,
});

const timer = setTimeout(() => { emit({ event: 'error', message: 'timed out' }); process.exit(1); }, 30000);
function finish() {
  clearTimeout(timer);
  connection.close();
}
connection.on('connection_close', () => process.exit(0));
connection.on('disconnected', (context) => {
  if (context.error) { emit({ event: 'error', message: String(context.error) }); process.exit(1); }
});
connection.on('connection_error', (context) => {
  emit({ event: 'connection_error', condition: context.connection.error && context.connection.error.condition });
  process.exit(1);
});

connection.on('connection_open', () => {
  emit({ event: 'open' });
  if (role === 'send') {
    const sender = connection.open_sender({ target: { address } });
    let sent = 0;
    let accepted = 0;
    sender.on('sendable', () => {
      while (sent < count && sender.sendable()) {
        sender.send({
          body: rhea.message.data_section(Buffer.from('rhea ' + sent)),
          application_properties: { n: String(sent) },
          message_id: 'rhea-' + sent,
        });
        sent++;
      }
    });
    sender.on('accepted', () => { accepted++; if (accepted === count) { emit({ event: 'accepted', count }); finish(); } });
    sender.on('rejected', (context) => { emit({ event: 'rejected', error: context.delivery.remote_state.error }); finish(); });
  } else if (role === 'receive') {
    const receiver = connection.open_receiver({ source: { address }, autoaccept: true, credit_window: 10 });
    let received = 0;
    receiver.on('message', (context) => {
      const message = context.message;
      emit({
        event: 'message',
        body: Buffer.from(message.body.content).toString(),
        properties: message.application_properties,
        annotations: message.message_annotations,
      });
      received++;
      if (received === count) finish();
    });
  } else if (role === 'attach') {
    const sender = connection.open_sender({ target: { address } });
    sender.on('sender_open', () => { emit({ event: 'attached' }); finish(); });
    sender.on('sender_error', (context) => {
      emit({ event: 'refused', condition: context.sender.error && context.sender.error.condition });
      finish();
    });
  }
});
