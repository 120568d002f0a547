package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/switchboard/switchboard/internal/mint"
)

// tokenCommand is `switchboard token`: it prints an HS256 token for trying
// token mode by hand (wscat, Postman, the page) and for scripts. It returns
// the exit code. The secret may come from SWITCHBOARD_JWT_SECRET, as the
// server's does, so it need not appear in the shell history.
func tokenCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("switchboard token", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	secret := fs.String("secret", "", "HMAC secret, as given to the server's -jwt-secret (default: $SWITCHBOARD_JWT_SECRET)")
	sub := fs.String("sub", "", "the uid the token proves (required)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime; the token's exp is now + ttl (0 = no exp)")
	rooms := fs.String("rooms", "", "comma list of the rooms the token may join (empty = any room)")
	audience := fs.String("aud", "", "aud claim, for a server started with -jwt-audience")
	issuer := fs.String("iss", "", "iss claim, for a server started with -jwt-issuer")
	fail := func(err error) int {
		fmt.Fprintln(stderr, "switchboard token:", err)
		return 2
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "usage: switchboard token -secret S -sub UID [-ttl 1h] [-rooms a,b] [-aud A] [-iss I]")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		return fail(err)
	}
	if *secret == "" {
		*secret = getenv("SWITCHBOARD_JWT_SECRET")
	}
	switch {
	case fs.NArg() > 0:
		return fail(fmt.Errorf("unexpected argument %q (see -h)", fs.Arg(0)))
	case *secret == "":
		return fail(errors.New("flag -secret is required (or set SWITCHBOARD_JWT_SECRET)"))
	case !validUID(*sub):
		return fail(fmt.Errorf("invalid value %q for flag -sub: 1-64 letters, digits, '.', '_', '-' or '@'", *sub))
	case *ttl < 0:
		return fail(fmt.Errorf("invalid value %v for flag -ttl: must not be negative", *ttl))
	}
	roomList := splitList(*rooms)
	for _, room := range roomList {
		if !validRoom(room) {
			return fail(fmt.Errorf("invalid value %q for flag -rooms: room %q is not a valid room name", *rooms, room))
		}
	}
	token, err := mint.HS256([]byte(*secret), mint.Options{Subject: *sub, TTL: *ttl, Rooms: roomList, Audience: *audience, Issuer: *issuer})
	if err != nil {
		return fail(err)
	}
	fmt.Fprintln(stdout, token)
	return 0
}
