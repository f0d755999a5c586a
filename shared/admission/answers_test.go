package admission

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluice-dl/sluice/shared/redisreply"
)

// Answers the scripts cannot be made to give from the data they read: a script and
// the code reading it that drifted apart. Each is a shape error naming the element,
// never a refusal (ErrSlotNotHeld, ErrFenced) or a grant dropped unread.
func TestScriptAnswersOfTheWrongShape(t *testing.T) {
	grant := []any{"t1", int64(3), "acme", "o", "e", "1700000000000", "", ""}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"stream: an unknown word", slotAnswer("stream", "begin stream of ticket t1", "MAYBE", "TOO_MANY"), `stream reply: want one of OK, NOT_HELD, NOGEN, TOO_MANY, got "MAYBE"`},
		{"stream: an integer", slotAnswer("stream", "begin stream of ticket t1", int64(1), "TOO_MANY"), "got an integer"},
		{"check: TOO_MANY is no answer of check.lua", slotAnswer("check", "check stream of ticket t1", "TOO_MANY"), `check reply: want one of OK, NOT_HELD, NOGEN, got "TOO_MANY"`},
		{"check: nil", slotAnswer("check", "check stream of ticket t1", nil), "got nil"},
		{"admit: a trailing partial grant", second(grantsFromReply(append(grant, "t2", int64(4)))), "want records of 8 elements, got 10 elements"},
		{"admit: a mistyped epoch", second(grantsFromReply([]any{"t1", "three", "acme", "o", "e", "0", "", ""})), `admit reply[1]: want an integer, got "three"`},
		{"ready: an unknown word", second(readyFromReply([]any{"OK", "GONE"}, 2)), `ready reply[1]: want one of OK, FENCED, got "GONE"`},
		{"ready: a short answer", second(readyFromReply([]any{"OK"}, 2)), "want at least 2 elements, got 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !errors.Is(c.err, redisreply.ErrShape) || !strings.Contains(c.err.Error(), c.want) {
				t.Fatalf("err = %v, want a shape error saying %q", c.err, c.want)
			}
			if errors.Is(c.err, ErrSlotNotHeld) || errors.Is(c.err, ErrFenced) {
				t.Fatalf("err = %v: a wrong shape taken for a refusal", c.err)
			}
		})
	}
}

// Well-formed answers mean what they always did.
func TestScriptAnswers(t *testing.T) {
	for res, want := range map[string]error{"OK": nil, "NOT_HELD": ErrSlotNotHeld, "TOO_MANY": ErrTooManyConnections, "NOGEN": ErrNoGeneration} {
		if err := slotAnswer("stream", "begin stream of ticket t1", res, "TOO_MANY"); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("stream answers %s: %v, want %v", res, err, want)
		}
	}
	grants, err := grantsFromReply([]any{"t1", int64(3), "acme", "o", "e", "1700000000000", "tp", "5000", "t2", int64(4), "acme", "o", "e", "0", "", ""})
	if err != nil || len(grants) != 2 || grants[0].RateBps != 5000 || grants[1].Epoch != 4 || !grants[1].Ticket.Created.IsZero() {
		t.Fatalf("two grants: %+v %v", grants, err)
	}
	out, err := readyFromReply([]any{"OK", "FENCED"}, 2)
	if err != nil || out[0] != nil || !errors.Is(out[1], ErrFenced) {
		t.Fatalf("ready OK, FENCED: %v %v", out, err)
	}
}

func second[T any](_ T, err error) error { return err }
