// A client nobody here wrote: @grpc/grpc-js calling grpc.health.v1 Check, Watch and List.
// Usage: node client.js HOST:PORT DESCRIPTOR_SET_FILE   (prints one JSON object)
"use strict";
const fs = require("fs");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [address, descriptorPath] = process.argv.slice(2);
const definition = protoLoader.loadFileDescriptorSetFromBuffer(fs.readFileSync(descriptorPath), {
  keepCase: true,
  enums: String,
  defaults: true,
});
const Health = grpc.loadPackageDefinition(definition).grpc.health.v1.Health;
const client = new Health(address, grpc.credentials.createInsecure());
const deadline = () => new Date(Date.now() + 5000);

function unary(method, request) {
  return new Promise((resolve) => {
    client[method](request, { deadline: deadline() }, (error, response) =>
      resolve(error ? { code: grpc.status[error.code] } : response),
    );
  });
}

function firstWatchStatus(service) {
  return new Promise((resolve) => {
    const call = client.Watch({ service }, { deadline: deadline() });
    call.on("data", (response) => {
      resolve(response.status);
      call.cancel();
    });
    call.on("error", (error) => {
      if (error.code !== grpc.status.CANCELLED) resolve({ code: grpc.status[error.code] });
    });
  });
}

(async () => {
  const result = {
    check: await unary("Check", { service: "" }),
    checkUnknown: await unary("Check", { service: "no.such.Service" }),
    watch: await firstWatchStatus("readiness"),
    watchUnknown: await firstWatchStatus("no.such.Service"),
    list: await unary("List", {}),
  };
  console.log(JSON.stringify(result));
  client.close();
})();
