package tpm

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"
)

// rawTCP carries raw TPM command and response buffers over a stream, as
// swtpm's server channel does (the protocol of tpm2-tss's "swtpm" TCTI).
// Unlike the TCG simulator protocol (go-tpm's tpm2/transport/tcp) there is
// no framing: the TPM response header carries the response size.
type rawTCP struct {
	conn net.Conn
}

// rawTimeout bounds one TPM command; RSA key generation on a software TPM
// can take seconds.
const rawTimeout = 2 * time.Minute

// maxResponse bounds a TPM response (real ones are a few KiB).
const maxResponse = 1 << 16

func (r *rawTCP) Send(cmd []byte) ([]byte, error) {
	if err := r.conn.SetDeadline(time.Now().Add(rawTimeout)); err != nil {
		return nil, err
	}
	if _, err := r.conn.Write(cmd); err != nil {
		return nil, fmt.Errorf("swtpm: write command: %w", err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(r.conn, hdr); err != nil {
		return nil, fmt.Errorf("swtpm: read response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > maxResponse {
		return nil, fmt.Errorf("swtpm: bad response size %d", size)
	}
	rsp := make([]byte, size)
	copy(rsp, hdr)
	if _, err := io.ReadFull(r.conn, rsp[10:]); err != nil {
		return nil, fmt.Errorf("swtpm: read response: %w", err)
	}
	return rsp, nil
}

// retrying re-sends a command the TPM answered with a warning that means
// "not done, try again" (TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_TESTING), as
// TSS stacks do; libtpms (swtpm) answers TPM_RC_RETRY at times. The TPM did
// not execute the command, so session state is unchanged and the same bytes
// may be sent again.
type retrying struct {
	inner transportTPM
}

type transportTPM interface {
	Send(input []byte) ([]byte, error)
}

const (
	rcYielded = 0x908
	rcTesting = 0x90A
	rcRetry   = 0x922
	maxTries  = 20
)

func (r retrying) Send(cmd []byte) ([]byte, error) {
	delay := time.Millisecond
	for try := 1; ; try++ {
		rsp, err := r.inner.Send(cmd)
		if err != nil || len(rsp) < 10 || try == maxTries {
			return rsp, err
		}
		switch binary.BigEndian.Uint32(rsp[6:10]) {
		case rcRetry, rcYielded, rcTesting:
			time.Sleep(delay)
			delay = min(2*delay, 100*time.Millisecond)
		default:
			return rsp, nil
		}
	}
}
