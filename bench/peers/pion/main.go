// A minimal broadcast SFU on pion/webrtc v3, the benchmark's Go point of comparison (bench/targets/pion.py).
//
// One publisher, any number of subscribers. The publisher's simulcast layers arrive by RID; each subscriber gets
// the top layer (-layer, default "f") of every video track and the audio, forwarded packet by packet through
// TrackLocalStaticRTP (pion rewrites SSRC and payload type per subscriber). pion's default interceptors answer
// subscribers' NACKs from a send buffer and send receiver reports and NACKs upstream. Keyframe requests (PLI, FIR)
// from subscribers become one PLI upstream per track per second at most, as a production SFU would throttle them.
//
// With -twcc it also does what a pion SFU that estimates each subscriber's bandwidth does: it stamps transport-wide
// sequence numbers on what it sends (so subscribers send transport-wide-cc feedback, as browsers do) and feeds that
// feedback to pion's Google congestion control estimator (interceptor/pkg/gcc, no pacer), one per peer connection.
// Without it, pion offers transport-wide-cc but stamps nothing, so its subscribers send no feedback at all.
//
// Built by the bench in GOPATH mode from Debian's golang-github-pion-webrtc.v3-dev: no module downloads.
//
// HTTP API (JSON, loopback):
//
//	POST /publish   {"sdp": offer}         -> {"sdp": answer}
//	POST /subscribe {}                     -> {"id": n, "sdp": offer}
//	POST /answer    {"id": n, "sdp": answer} -> {}
//	GET  /stats                            -> {"subscribers": n, "tracks": n, "keyframe_requests": n}
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/interceptor/pkg/gcc"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v3"
)

type forwarded struct {
	local      *webrtc.TrackLocalStaticRTP
	remoteSSRC uint32
	lastPLI    time.Time
}

type sfu struct {
	api       *webrtc.API
	layer     string
	mu        sync.Mutex
	publisher *webrtc.PeerConnection
	tracks    []*forwarded
	subs      map[int]*webrtc.PeerConnection
	nextID    int
	kfReqs    int
}

func newAPI(host string, portMin, portMax uint16, twcc bool) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	for _, uri := range []string{
		"urn:ietf:params:rtp-hdrext:sdes:mid",
		"urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
		"urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
	} {
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: uri}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
	}
	i := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, i); err != nil {
		return nil, err
	}
	if twcc {
		estimator, err := cc.NewInterceptor(func() (cc.BandwidthEstimator, error) {
			return gcc.NewSendSideBWE(gcc.SendSideBWEPacer(gcc.NewNoOpPacer()))
		})
		if err != nil {
			return nil, err
		}
		// the estimator first: interceptors added later wrap it, so a packet is stamped before the estimator sees it
		i.Add(estimator)
		if err := webrtc.ConfigureTWCCHeaderExtensionSender(m, i); err != nil {
			return nil, err
		}
	}
	s := webrtc.SettingEngine{}
	s.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	s.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	want := net.ParseIP(host)
	s.SetIPFilter(func(ip net.IP) bool { return ip.Equal(want) })
	s.SetIncludeLoopbackCandidate(want.IsLoopback())
	if portMin > 0 {
		if err := s.SetEphemeralUDPPortRange(portMin, portMax); err != nil {
			return nil, err
		}
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(i), webrtc.WithSettingEngine(s)), nil
}

// complete sets the local description and returns it once every candidate is in it (no trickle).
func complete(pc *webrtc.PeerConnection, desc webrtc.SessionDescription) (*webrtc.SessionDescription, error) {
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(desc); err != nil {
		return nil, err
	}
	<-gathered
	return pc.LocalDescription(), nil
}

func (s *sfu) publish(offer string) (string, error) {
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	pc.OnTrack(func(remote *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
		rid := remote.RID()
		if rid != "" && rid != s.layer {
			// other layers are received (the publisher pays for them, as in a classroom) but not forwarded
			drain(remote)
			return
		}
		local, err := webrtc.NewTrackLocalStaticRTP(remote.Codec().RTPCodecCapability, remote.ID(), remote.StreamID())
		if err != nil {
			log.Println("track:", err)
			return
		}
		f := &forwarded{local: local, remoteSSRC: uint32(remote.SSRC())}
		s.mu.Lock()
		s.tracks = append(s.tracks, f)
		s.mu.Unlock()
		for {
			packet, _, err := remote.ReadRTP()
			if err != nil {
				return
			}
			packet.Extension, packet.Extensions = false, nil // the publisher's MID and RID mean nothing downstream
			if err := local.WriteRTP(packet); err != nil && !errors.Is(err, io.ErrClosedPipe) {
				log.Println("write:", err)
			}
		}
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", err
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	local, err := complete(pc, answer)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.publisher = pc
	s.mu.Unlock()
	return local.SDP, nil
}

func drain(remote *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := remote.Read(buf); err != nil {
			return
		}
	}
}

func (s *sfu) subscribe() (int, string, error) {
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return 0, "", err
	}
	s.mu.Lock()
	tracks := append([]*forwarded(nil), s.tracks...)
	s.mu.Unlock()
	if len(tracks) == 0 {
		_ = pc.Close()
		return 0, "", errors.New("nothing published yet")
	}
	for _, f := range tracks {
		sender, err := pc.AddTrack(f.local)
		if err != nil {
			_ = pc.Close()
			return 0, "", err
		}
		go s.readRTCP(sender, f)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		_ = pc.Close()
		return 0, "", err
	}
	local, err := complete(pc, offer)
	if err != nil {
		_ = pc.Close()
		return 0, "", err
	}
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.subs[id] = pc
	s.mu.Unlock()
	pc.OnConnectionStateChange(func(state webrtc.PeerConnectionState) {
		if state == webrtc.PeerConnectionStateFailed || state == webrtc.PeerConnectionStateClosed {
			s.mu.Lock()
			delete(s.subs, id)
			s.mu.Unlock()
			_ = pc.Close()
		}
	})
	return id, local.SDP, nil
}

// readRTCP runs the interceptors (the NACK responder among them) and relays keyframe requests, throttled.
func (s *sfu) readRTCP(sender *webrtc.RTPSender, f *forwarded) {
	for {
		packets, _, err := sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range packets {
			switch p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				s.mu.Lock()
				now := time.Now()
				pub := s.publisher
				send := pub != nil && now.Sub(f.lastPLI) >= time.Second
				if send {
					f.lastPLI = now
					s.kfReqs++
				}
				s.mu.Unlock()
				if send {
					_ = pub.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: f.remoteSSRC}})
				}
			}
		}
	}
}

func (s *sfu) answer(id int, sdp string) error {
	s.mu.Lock()
	pc := s.subs[id]
	s.mu.Unlock()
	if pc == nil {
		return fmt.Errorf("no subscriber %d", id)
	}
	return pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp})
}

func handle(fn func(body map[string]any) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body := map[string]any{}
		if r.Method == http.MethodPost {
			if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
				http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		out, err := fn(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}
}

func text(body map[string]any, key string) string {
	v, _ := body[key].(string)
	return v
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "HTTP address")
	host := flag.String("ice-host", "127.0.0.1", "the one address to gather ICE candidates on")
	layer := flag.String("layer", "f", "the simulcast RID forwarded to subscribers")
	ports := flag.String("ports", "", "UDP port range MIN-MAX for media")
	twcc := flag.Bool("twcc", false, "stamp transport-wide sequence numbers and estimate each subscriber's bandwidth")
	flag.Parse()
	var portMin, portMax uint16
	if *ports != "" {
		if _, err := fmt.Sscanf(*ports, "%d-%d", &portMin, &portMax); err != nil {
			log.Fatal("bad -ports: ", err)
		}
	}
	api, err := newAPI(*host, portMin, portMax, *twcc)
	if err != nil {
		log.Fatal(err)
	}
	s := &sfu{api: api, layer: *layer, subs: map[int]*webrtc.PeerConnection{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/publish", handle(func(body map[string]any) (any, error) {
		sdp, err := s.publish(text(body, "sdp"))
		return map[string]any{"sdp": sdp}, err
	}))
	mux.HandleFunc("/subscribe", handle(func(body map[string]any) (any, error) {
		id, sdp, err := s.subscribe()
		return map[string]any{"id": id, "sdp": sdp}, err
	}))
	mux.HandleFunc("/answer", handle(func(body map[string]any) (any, error) {
		id, _ := body["id"].(float64)
		return map[string]any{}, s.answer(int(id), text(body, "sdp"))
	}))
	mux.HandleFunc("/stats", handle(func(map[string]any) (any, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return map[string]any{"subscribers": len(s.subs), "tracks": len(s.tracks), "keyframe_requests": s.kfReqs}, nil
	}))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	// the bench reads the address from the first line
	fmt.Fprintf(os.Stdout, "listening http://%s\n", ln.Addr())
	log.Fatal(http.Serve(ln, mux))
}
