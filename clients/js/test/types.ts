// Type-checked by `npm run typecheck` (tests/clients_js/test_types.py): typical uses of
// the package compile against src/index.d.ts, and misuses do not.
import {
  AthenaClient,
  CloseCode,
  connect,
  type AthenaEvent,
  type AthenaGap,
  type AthenaReset,
  type ClientState,
  type Position,
} from "athena-cdc-client";

const client: AthenaClient = connect("ws://localhost:4053/ws", {
  client: "org_42",
  getToken: async () => "a.b.c",
  backoff: { initialMs: 250, maxMs: 10_000 },
  rate: { perSecond: 50 },
});

client.on("event", (event: AthenaEvent) => {
  const seq: number = event.seq;
  const at: number = event.tsMs;
  void [seq, at, event.payload, event.channel];
});
client.on("gap", (gap: AthenaGap) => void [gap.fromSeq, gap.toSeq]);
client.on("reset", (reset: AthenaReset) => void [reset.previousEpoch, reset.lastSeq]);
client.on("state", (state: ClientState) => void (state === "catching_up"));
client.on("disconnect", ({ code }) => void (code === CloseCode.SLOW_CONSUMER));
client.on("error", (error) => void [error.kind, error.code, error.channel]);

async function resume(saved: Record<string, Position>): Promise<void> {
  for (const [channel, { seq, epoch }] of Object.entries(saved)) {
    await client.subscribe(channel, { sinceSeq: seq, epoch });
  }
  const positions: Record<string, Position> = client.positions();
  void positions;
  await client.close();
}
void resume;

// @ts-expect-error: no such event
client.on("message", () => {});
// @ts-expect-error: the client name is required
connect("ws://localhost:4053/ws", {});
// @ts-expect-error: sinceSeq is a number
void client.subscribe("x", { sinceSeq: "1" });
