/* Fuzzes the frame decoder on a stream of frames, and the decoders that read the JSON inside
 * (spec, signature): whatever they accept must be sane and round-trip. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "modelshare.h"
#include "../../src/common/proto.h"
#include "../../src/common/spec.h"
#include "../../src/common/util.h"

static void check_message(json_t *msg)
{
    char err[MS__ERRLEN];
    if (!json_is_object(msg))
        abort();
    /* Encoding what was decoded gives a frame that decodes to an equal message. */
    uint8_t *buf;
    size_t len, used;
    if (ms__frame_encode(msg, &buf, &len, err, sizeof err) == 0) {
        json_t *back = NULL;
        if (ms__frame_decode(buf, len, &back, &used, err, sizeof err) != 0 || used != len ||
            back == NULL || !json_equal(msg, back))
            abort();
        json_decref(back);
        free(buf);
    }
    ms__spec spec;
    json_t *s = json_object_get(msg, "spec");
    if (ms__spec_from_json(s != NULL ? s : msg, &spec, err, sizeof err) == 0) {
        json_t *canon = ms__spec_to_json(&spec);
        ms__spec again;
        if (canon == NULL || ms__spec_from_json(canon, &again, err, sizeof err) != 0 ||
            !ms__spec_equal(&spec, &again))
            abort();
        ms__spec_free(&again);
        json_decref(canon);
        ms__spec_free(&spec);
    }
    ms__sig in, out;
    if (ms__sig_from_json(json_object_get(msg, "signature"), &in, &out, err, sizeof err) == 0) {
        if (in.rank < 0 || in.rank > MS_MAX_RANK || out.rank < 0 || out.rank > MS_MAX_RANK)
            abort();
        json_t *j = ms__sig_to_json(&in, &out);
        json_decref(j);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[MS__ERRLEN];
    size_t off = 0;
    while (off < size) {
        json_t *msg = NULL;
        size_t used = 0;
        int rc = ms__frame_decode(data + off, size - off, &msg, &used, err, sizeof err);
        if (rc != 0) {
            if (msg != NULL || (rc != MS_E_TOO_LARGE && rc != MS_E_PROTOCOL) ||
                strnlen(err, sizeof err) == 0)
                abort();
            break;
        }
        if (used == 0) {
            if (msg != NULL)
                abort();
            break;
        }
        if (used < 5 || used > size - off || used > 4 + (size_t)MS__FRAME_MAX)
            abort();
        check_message(msg);
        json_decref(msg);
        off += used;
    }
    return 0;
}
