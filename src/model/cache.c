/*
 * cache.c - per-model data that backends derive from the weights (see
 * lp_model_cache_get in model.h). Its own file so that a backend linked
 * without the format loaders (the CUDA emulation check) can use it.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "model.h"

static pthread_mutex_t g_cache_lock = PTHREAD_MUTEX_INITIALIZER;

enum lopad_status lp_model_cache_get(const struct lopad_model *m, const char *key,
                                     lp_model_cache_make_fn make, void *arg,
                                     void (*free_fn)(void *data), void **out) {
    *out = NULL;
    if (strlen(key) >= sizeof((struct lp_model_cache *)0)->key)
        return lp_error(LOPAD_ERR_ARG, "model cache key too long: %s", key);
    /* the cache list is the one part of a loaded model that changes */
    struct lopad_model *mm = (struct lopad_model *)m;
    enum lopad_status st = LOPAD_OK;
    pthread_mutex_lock(&g_cache_lock);
    struct lp_model_cache *e;
    for (e = mm->caches; e; e = e->next)
        if (!strcmp(e->key, key)) break;
    if (!e) {
        void *data = NULL;
        if (!(e = lp_calloc(1, sizeof *e, "model cache entry"))) {
            st = LOPAD_ERR_NOMEM;
        } else if ((st = make(m, arg, &data)) || !data) {
            lp_free(e); /* nothing made: no entry (a later call may make it) */
            e = NULL;
        } else {
            snprintf(e->key, sizeof e->key, "%s", key);
            e->data = data;
            e->free = free_fn;
            e->next = mm->caches;
            mm->caches = e;
        }
    }
    pthread_mutex_unlock(&g_cache_lock);
    if (e) *out = e->data;
    return st;
}
