// Prometheus text for GET /metrics: requests by endpoint and status, tokens, queue depth, bytes streamed.
import type { EngineStats } from "../engine/model.js";
import type { SchedulerStats } from "../engine/scheduler.js";

export class Metrics {
  private readonly requests = new Map<string, number>();

  count(endpoint: string, status: number): void {
    const key = `endpoint="${endpoint}",status="${status}"`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
  }

  render(s: SchedulerStats, e: EngineStats): string {
    const lines = [
      "# HELP layerwise_requests_total HTTP requests by endpoint and status.",
      "# TYPE layerwise_requests_total counter",
      ...[...this.requests].map(([labels, n]) => `layerwise_requests_total{${labels}} ${n}`),
      ...metric("layerwise_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", s.promptTokens),
      ...metric("layerwise_generated_tokens_total", "counter", "Tokens generated.", s.generatedTokens),
      ...metric("layerwise_completed_requests_total", "counter", "Generations finished.", s.completed),
      ...metric("layerwise_queue_depth", "gauge", "Requests waiting to join the batch.", s.queued),
      ...metric("layerwise_active_sequences", "gauge", "Sequences in the running batch.", s.active),
      ...metric(
        "layerwise_h2d_bytes_total",
        "counter",
        "Bytes copied host to device (weights and KV streamed).",
        e.h2dBytes,
      ),
      ...metric("layerwise_disk_read_bytes_total", "counter", "Bytes read from disk.", e.diskReadBytes),
      ...metric(
        "layerwise_kv_cache_hit_tokens_total",
        "counter",
        "Prompt tokens served from the persistent KV cache.",
        e.kvCacheHitTokens,
      ),
      ...metric("layerwise_peak_vram_bytes", "gauge", "Peak device memory.", e.peakVramBytes),
    ];
    return lines.join("\n") + "\n";
  }
}

function metric(name: string, type: "counter" | "gauge", help: string, value: number): string[] {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${value}`];
}
