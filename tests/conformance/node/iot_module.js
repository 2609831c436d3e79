// An IoT Edge module on the Node Azure IoT device SDK (azure-iot-device + azure-iot-device-amqp),
// driven by tests/conformance/test_amqp_node_sdk.py. It prints one JSON object per line and exits 0
// when its role is done, 1 on any error.
//
//   node iot_module.js send  <connection-string> <ca-file> <transport> <output> <count>
//   node iot_module.js serve <connection-string> <ca-file> <transport> <inputs-to-wait-for>
//
// send:  opens, sends <count> messages on output <output> (application property seq=i), closes.
// serve: opens, answers direct method "echo" with 200 and the request payload, prints its twin
//        (getTwin), patches reported {"served": true}, then waits for <inputs-to-wait-for> input
//        messages and one method call before closing.
'use strict';

const fs = require('fs');
const { ModuleClient, Message } = require('azure-iot-device');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');

const [role, connectionString, caFile, transportName, ...rest] = process.argv.slice(2);

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function fail(error) {
  emit({ event: 'error', message: String(error && (error.stack || error.message || error)) });
  process.exit(1);
}

async function main() {
  const transport = transportName === 'Amqp' ? Amqp : AmqpWs;
  const client = ModuleClient.fromConnectionString(connectionString, transport);
  client.on('error', fail);
  client.setOptions({ ca: fs.readFileSync(caFile, 'utf8') });
  if (role === 'send') {
    const [output, count] = [rest[0], Number(rest[1])];
    await client.open();
    emit({ event: 'connected' });
    for (let i = 0; i < count; i++) {
      const message = new Message(JSON.stringify({ seq: i }));
      message.properties.add('seq', String(i));
      message.contentType = 'application/json';
      message.contentEncoding = 'utf-8';
      await client.sendOutputEvent(output, message);
    }
    emit({ event: 'sent', count });
    await client.close();
    return;
  }
  if (role !== 'serve') {
    throw new Error('unknown role ' + role);
  }
  const expectedInputs = Number(rest[0]);
  const inputs = [];
  let methodCalled = false;
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  const check = () => { if (inputs.length >= expectedInputs && methodCalled) done(); };
  client.on('inputMessage', (inputName, message) => {
    const properties = {};
    for (const item of message.properties.propertyList) properties[item.key] = item.value;
    inputs.push(1);
    emit({ event: 'input', input: inputName, body: message.data.toString(), properties });
    client.complete(message, (err) => { if (err) fail(err); check(); });
  });
  await client.open();
  client.onMethod('echo', (request, response) => {
    emit({ event: 'method', name: request.methodName, payload: request.payload });
    response.send(200, { echoed: request.payload }, (err) => {
      if (err) fail(err);
      methodCalled = true;
      check();
    });
  });
  const twin = await client.getTwin();
  emit({ event: 'twin', desired: twin.properties.desired });
  await new Promise((resolve, reject) => {
    twin.properties.reported.update({ served: true }, (err) => (err ? reject(err) : resolve()));
  });
  emit({ event: 'reported' });
  emit({ event: 'ready' });
  await finished;
  await client.close();
  emit({ event: 'done' });
}

main().then(() => process.exit(0), fail);
