package probe

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
)

// SCTP chunk types (RFC 9260 section 3.2) and the state cookie parameter type.
const (
	chunkInit    = 1
	chunkInitAck = 2
	paramCookie  = 7

	ipProtoSCTP = 132
	sctpHdrLen  = 12
	initBodyLen = 16 // initiate tag, a_rwnd, outbound streams, inbound streams, initial TSN
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sctpPacket is the part of an SCTP packet the probes use: the common header and the
// first chunk, when it is an INIT or an INIT ACK.
type sctpPacket struct {
	SrcPort, DstPort uint16
	VTag             uint32
	Chunk            uint8  // type of the first chunk
	InitTag          uint32 // INIT and INIT ACK: the sender's initiate tag
}

// buildInit is an SCTP packet holding one INIT chunk.
func buildInit(src, dst uint16, initTag, tsn uint32) []byte {
	b := make([]byte, sctpHdrLen+4+initBodyLen)
	putHeader(b, src, dst, 0)
	putChunk(b[sctpHdrLen:], chunkInit, 4+initBodyLen)
	putInitBody(b[sctpHdrLen+4:], initTag, tsn)
	putChecksum(b)
	return b
}

// buildInitAck answers an INIT: ports swapped by the caller, vtag = the INIT's
// initiate tag, our own initiate tag, and a state cookie parameter.
func buildInitAck(src, dst uint16, vtag, initTag, tsn uint32, cookie []byte) []byte {
	plen := 4 + len(cookie)
	pad := (4 - plen%4) % 4
	clen := 4 + initBodyLen + plen
	b := make([]byte, sctpHdrLen+clen+pad)
	putHeader(b, src, dst, vtag)
	putChunk(b[sctpHdrLen:], chunkInitAck, clen)
	putInitBody(b[sctpHdrLen+4:], initTag, tsn)
	p := b[sctpHdrLen+4+initBodyLen:]
	binary.BigEndian.PutUint16(p[0:], paramCookie)
	binary.BigEndian.PutUint16(p[2:], uint16(plen))
	copy(p[4:], cookie)
	putChecksum(b)
	return b
}

func putHeader(b []byte, src, dst uint16, vtag uint32) {
	binary.BigEndian.PutUint16(b[0:], src)
	binary.BigEndian.PutUint16(b[2:], dst)
	binary.BigEndian.PutUint32(b[4:], vtag)
}

func putChunk(b []byte, typ uint8, length int) {
	b[0], b[1] = typ, 0
	binary.BigEndian.PutUint16(b[2:], uint16(length))
}

func putInitBody(b []byte, initTag, tsn uint32) {
	binary.BigEndian.PutUint32(b[0:], initTag)
	binary.BigEndian.PutUint32(b[4:], 65536) // a_rwnd
	binary.BigEndian.PutUint16(b[8:], 1)     // outbound streams
	binary.BigEndian.PutUint16(b[10:], 1)    // inbound streams
	binary.BigEndian.PutUint32(b[12:], tsn)
}

// sctpChecksum is the CRC32c of the packet with its checksum field taken as zero.
func sctpChecksum(b []byte) uint32 {
	var zero [4]byte
	crc := crc32.Update(0, castagnoli, b[:8])
	crc = crc32.Update(crc, castagnoli, zero[:])
	return crc32.Update(crc, castagnoli, b[sctpHdrLen:])
}

// putChecksum writes the CRC32c; SCTP carries it in little-endian byte order (as
// Linux's sctp_compute_cksum and every capture tool have it).
func putChecksum(b []byte) {
	binary.LittleEndian.PutUint32(b[8:], sctpChecksum(b))
}

// parseSCTP reads an IPv4 packet as a raw IPPROTO_SCTP socket returns it (IP header
// included): its source and destination and the SCTP packet. ok is false for anything
// else, or a bad checksum.
func parseSCTP(pkt []byte) (src, dst netip.Addr, p sctpPacket, ok bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != ipProtoSCTP {
		return src, dst, p, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	if ihl < 20 || total < ihl || total > len(pkt) {
		return src, dst, p, false
	}
	src = netip.AddrFrom4([4]byte(pkt[12:16]))
	dst = netip.AddrFrom4([4]byte(pkt[16:20]))
	s := pkt[ihl:total]
	if len(s) < sctpHdrLen+4 || binary.LittleEndian.Uint32(s[8:]) != sctpChecksum(s) {
		return src, dst, p, false
	}
	p.SrcPort = binary.BigEndian.Uint16(s[0:])
	p.DstPort = binary.BigEndian.Uint16(s[2:])
	p.VTag = binary.BigEndian.Uint32(s[4:])
	p.Chunk = s[sctpHdrLen]
	if (p.Chunk == chunkInit || p.Chunk == chunkInitAck) && len(s) >= sctpHdrLen+4+initBodyLen {
		p.InitTag = binary.BigEndian.Uint32(s[sctpHdrLen+4:])
	}
	return src, dst, p, true
}
