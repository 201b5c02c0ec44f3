// athena-cdc-client: see README.md.
export { AthenaClient, CloseCode, connect } from "./client.js";
