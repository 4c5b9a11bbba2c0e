/*
 * serve_metrics.c - the counters of `lopad serve` and /metrics in Prometheus'
 * text format: requests by status code, prompt and generated tokens, forwards,
 * tokens per forward, queue length, busy slots and a request latency histogram.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

#define N_CODES 24

static const double buckets[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

static struct {
    pthread_mutex_t mu;
    int codes[N_CODES];
    unsigned long long code_count[N_CODES];
    int n_codes;
    unsigned long long hist[N_BUCKETS], n_requests;
    double latency_sum;
    unsigned long long prompt_tokens, gen_tokens, forwards, generations;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER};

void srv_metrics_request(int http_status, double seconds) {
    pthread_mutex_lock(&M.mu);
    int i = 0;
    while (i < M.n_codes && M.codes[i] != http_status)
        i++;
    if (i == M.n_codes && i < N_CODES) M.codes[M.n_codes++] = http_status;
    if (i < N_CODES) M.code_count[i]++;
    for (size_t b = 0; b < N_BUCKETS; b++)
        if (seconds <= buckets[b]) M.hist[b]++;
    M.n_requests++;
    M.latency_sum += seconds;
    pthread_mutex_unlock(&M.mu);
}

void srv_metrics_generation(int prompt_tokens, int completion_tokens, int forwards) {
    pthread_mutex_lock(&M.mu);
    M.prompt_tokens += (unsigned long long)prompt_tokens;
    M.gen_tokens += (unsigned long long)completion_tokens;
    M.forwards += (unsigned long long)forwards;
    M.generations++;
    pthread_mutex_unlock(&M.mu);
}

static void head(struct srv_buf *b, const char *name, const char *type, const char *help) {
    srv_buf_addf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

char *srv_metrics_text(int queue_len, int busy, int n_slots) {
    struct srv_buf b = {0};
    pthread_mutex_lock(&M.mu);
    head(&b, "lopad_requests_total", "counter", "HTTP requests answered, by status code.");
    for (int i = 0; i < M.n_codes; i++)
        srv_buf_addf(&b, "lopad_requests_total{code=\"%d\"} %llu\n", M.codes[i], M.code_count[i]);
    head(&b, "lopad_generations_total", "counter", "Generations run.");
    srv_buf_addf(&b, "lopad_generations_total %llu\n", M.generations);
    head(&b, "lopad_prompt_tokens_total", "counter", "Prompt tokens of the generations.");
    srv_buf_addf(&b, "lopad_prompt_tokens_total %llu\n", M.prompt_tokens);
    head(&b, "lopad_generated_tokens_total", "counter",
         "Completion tokens returned (cut at EOS or a stop string).");
    srv_buf_addf(&b, "lopad_generated_tokens_total %llu\n", M.gen_tokens);
    head(&b, "lopad_forwards_total", "counter", "Model forwards (NFE).");
    srv_buf_addf(&b, "lopad_forwards_total %llu\n", M.forwards);
    head(&b, "lopad_tokens_per_forward", "gauge", "Completion tokens per forward so far.");
    srv_buf_addf(&b, "lopad_tokens_per_forward %.4f\n",
                 M.forwards ? (double)M.gen_tokens / (double)M.forwards : 0.0);
    head(&b, "lopad_request_duration_seconds", "histogram",
         "Time from a request's headers to its last byte queued.");
    for (size_t i = 0; i < N_BUCKETS; i++)
        srv_buf_addf(&b, "lopad_request_duration_seconds_bucket{le=\"%g\"} %llu\n", buckets[i],
                     M.hist[i]);
    srv_buf_addf(&b, "lopad_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", M.n_requests);
    srv_buf_addf(&b, "lopad_request_duration_seconds_sum %.6f\n", M.latency_sum);
    srv_buf_addf(&b, "lopad_request_duration_seconds_count %llu\n", M.n_requests);
    pthread_mutex_unlock(&M.mu);
    head(&b, "lopad_queue_length", "gauge", "Requests waiting for a slot.");
    srv_buf_addf(&b, "lopad_queue_length %d\n", queue_len);
    head(&b, "lopad_slots_busy", "gauge", "Slots generating.");
    srv_buf_addf(&b, "lopad_slots_busy %d\n", busy);
    head(&b, "lopad_slots", "gauge", "Slots (sessions on the one model).");
    srv_buf_addf(&b, "lopad_slots %d\n", n_slots);
    return b.p;
}
