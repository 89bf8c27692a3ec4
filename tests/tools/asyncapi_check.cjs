// Parse an AsyncAPI document with the official parser (@asyncapi/parser, installed by
// `make test-deps` into .npm-tools/) and print what it found as one JSON object:
// its diagnostics (severity 0 = error) and, per message, the header names and correlation id.
const path = require("node:path");
const fs = require("node:fs");
const root = path.resolve(__dirname, "..", "..");
const { Parser } = require(path.join(root, ".npm-tools", "node_modules", "@asyncapi", "parser"));

async function main() {
  const text = fs.readFileSync(process.argv[2], "utf8");
  const { document, diagnostics } = await new Parser().parse(text);
  const messages = {};
  if (document) {
    for (const message of document.allMessages().all()) {
      const headers = message.headers();
      const correlation = message.correlationId();
      messages[message.title() || message.id()] = {
        headers: headers ? Object.keys(headers.properties() || {}) : [],
        correlation: correlation ? correlation.location() : null,
        payload: message.payload() ? message.payload().title() || message.payload().id() : null,
      };
    }
  }
  console.log(
    JSON.stringify({
      parsed: Boolean(document),
      version: document ? document.version() : null,
      channels: document ? document.channels().all().map((c) => c.address()) : [],
      messages,
      diagnostics: diagnostics.map((d) => ({
        severity: d.severity,
        code: d.code,
        message: d.message,
        path: d.path,
      })),
    }),
  );
}

main().catch((error) => {
  console.error(String(error && error.stack ? error.stack : error));
  process.exit(2);
});
