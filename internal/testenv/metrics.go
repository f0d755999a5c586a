package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// ParseMetrics reads a Prometheus text exposition into series ("name{labels}") → value.
func ParseMetrics(raw []byte) (map[string]float64, error) {
	series := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			return nil, fmt.Errorf("bad sample %q", line)
		}
		series[line[:i]] = v
	}
	return series, sc.Err()
}
