package httpapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/google/uuid"

	"github.com/veil-platform/veil/control-plane/identity"
)

// handler adapts a handler returning an error.
func (a *api) handle(fn func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			a.fail(w, r, err)
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// writeSecret answers a body that shows a secret once: marked no-store,
// so that neither caches nor the idempotency store keep it.
func writeSecret(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, v)
}

// list is the envelope of every paginated answer.
type list[T any] struct {
	Data       []T    `json:"data"`
	NextCursor string `json:"next_cursor,omitempty"`
}

func newList[T any](items []T, next string) list[T] {
	if items == nil {
		items = []T{}
	}
	return list[T]{Data: items, NextCursor: next}
}

// writePage answers 200 with one page of a list, or returns err, the
// list call's error.
func writePage[T any](w http.ResponseWriter, items []T, next string, err error) error {
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, newList(items, next))
	return nil
}

// byID is a service call on the resource named by the path's {id}.
type byID[T any] func(ctx context.Context, act identity.Actor, id uuid.UUID) (T, error)

// handler is a route's handler; handle answers its error as a problem.
type handler = func(http.ResponseWriter, *http.Request) error

// read answers 200 with what get returns for the path's id.
func read[T any](get byID[T]) handler { return answer(http.StatusOK, writeJSON, get) }

// secret answers 200 with what call returns for the path's id: a secret
// shown this once, so marked no-store (writeSecret).
func secret[T any](call byID[T]) handler { return answer(http.StatusOK, writeSecret, call) }

// answer answers status with what do returns for the path's id, written
// by out (writeJSON or writeSecret).
func answer[T any](status int, out func(http.ResponseWriter, int, any), do byID[T]) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id")
		if err != nil {
			return err
		}
		v, err := do(r.Context(), actorFrom(r), id)
		if err != nil {
			return err
		}
		out(w, status, v)
		return nil
	}
}

// remove answers 204 once del has removed the path's id.
func remove(del func(ctx context.Context, act identity.Actor, id uuid.UUID) error) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id")
		if err != nil {
			return err
		}
		if err := del(r.Context(), actorFrom(r), id); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

// call answers 200 with what do returns for the caller, for the routes
// without an id.
func call[T any](do func(ctx context.Context, act identity.Actor) (T, error)) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		out, err := do(r.Context(), actorFrom(r))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

// listOf turns a call returning a whole (unpaginated) slice into one
// answering the list envelope.
func listOf[T any](get byID[[]T]) byID[list[T]] {
	return func(ctx context.Context, act identity.Actor, id uuid.UUID) (list[T], error) {
		items, err := get(ctx, act, id)
		return newList(items, ""), err
	}
}

// change is a service call that changes the resource named by the path's
// {id} with a body of type In.
type change[In, T any] func(ctx context.Context, act identity.Actor, id uuid.UUID, in In) (T, error)

// write decodes a body of type In and answers status with what do
// returns for the path's id.
func write[In, T any](status int, do change[In, T]) handler {
	return writeWith(decode, do, func(w http.ResponseWriter, out T) { writeJSON(w, status, out) })
}

// writeOptional is write for a body that may be left out: do then gets
// In's zero value.
func writeOptional[In, T any](status int, do change[In, T]) handler {
	return writeWith(decodeOptional, do, func(w http.ResponseWriter, out T) { writeJSON(w, status, out) })
}

// writeWith reads a body of type In with dec (decode or decodeOptional),
// calls do for the path's id and answers its result with respond.
func writeWith[In, T any](dec func(*http.Request, any) error, do change[In, T], respond func(http.ResponseWriter, T)) handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id")
		if err != nil {
			return err
		}
		var in In
		if err := dec(r, &in); err != nil {
			return err
		}
		out, err := do(r.Context(), actorFrom(r), id, in)
		if err != nil {
			return err
		}
		respond(w, out)
		return nil
	}
}

// reasoned answers what do returns for the path's id and the body's
// optional {"reason"}, with the status status gives (nil: 200).
func reasoned[T any](do func(ctx context.Context, act identity.Actor, id uuid.UUID, reason string) (T, error), status func(T) int) handler {
	withReason := func(ctx context.Context, act identity.Actor, id uuid.UUID, b reasonBody) (T, error) {
		return do(ctx, act, id, b.Reason)
	}
	return writeWith(decodeOptional, withReason, func(w http.ResponseWriter, out T) {
		code := http.StatusOK
		if status != nil {
			code = status(out)
		}
		writeJSON(w, code, out)
	})
}

// with fixes the argument a service call takes between the id and the
// reason (an action, a decision, a status), for reasoned.
func with[A, T any](do func(ctx context.Context, act identity.Actor, id uuid.UUID, arg A, reason string) (T, error), arg A) func(ctx context.Context, act identity.Actor, id uuid.UUID, reason string) (T, error) {
	return func(ctx context.Context, act identity.Actor, id uuid.UUID, reason string) (T, error) {
		return do(ctx, act, id, arg, reason)
	}
}

type reasonBody struct {
	Reason string `json:"reason"`
}
