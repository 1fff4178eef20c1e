package detect

import "math"

// country is an ISO 3166-1 alpha-2 code packed into two bytes, so remembered
// uses carry it without a string. Zero means unknown.
type country uint16

func packCountry(s string) country {
	if len(s) != 2 {
		return 0
	}
	a, b := upper(s[0]), upper(s[1])
	if a < 'A' || a > 'Z' || b < 'A' || b > 'Z' {
		return 0
	}
	return country(uint16(a)<<8 | uint16(b))
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

func (c country) String() string {
	if c == 0 {
		return ""
	}
	return string([]byte{byte(c >> 8), byte(c)})
}

// centroids holds approximate geographic centres (degrees) of the countries
// most traffic comes from. It is written out here rather than loaded from a
// GeoIP database because impossible travel only needs distances good to a few
// hundred kilometres: emitters already resolved the country, a database would
// add a download and a licence to every install, and countries missing from
// the table simply never take part in the travel check (no false alarms).
var centroids = map[country][2]float64{
	packCountry("US"): {39.8, -98.6}, packCountry("CA"): {56.1, -106.3}, packCountry("MX"): {23.6, -102.6},
	packCountry("BR"): {-14.2, -51.9}, packCountry("AR"): {-38.4, -63.6}, packCountry("CL"): {-35.7, -71.5},
	packCountry("CO"): {4.6, -74.3}, packCountry("PE"): {-9.2, -75.0}, packCountry("VE"): {6.4, -66.6},
	packCountry("GB"): {54.0, -2.0}, packCountry("IE"): {53.4, -8.2}, packCountry("FR"): {46.2, 2.2},
	packCountry("DE"): {51.2, 10.5}, packCountry("NL"): {52.1, 5.3}, packCountry("BE"): {50.5, 4.5},
	packCountry("LU"): {49.8, 6.1}, packCountry("CH"): {46.8, 8.2}, packCountry("AT"): {47.5, 14.6},
	packCountry("IT"): {41.9, 12.6}, packCountry("ES"): {40.5, -3.7}, packCountry("PT"): {39.4, -8.2},
	packCountry("DK"): {56.3, 9.5}, packCountry("NO"): {60.5, 8.5}, packCountry("SE"): {60.1, 18.6},
	packCountry("FI"): {61.9, 25.7}, packCountry("IS"): {64.9, -19.0}, packCountry("PL"): {51.9, 19.1},
	packCountry("CZ"): {49.8, 15.5}, packCountry("SK"): {48.7, 19.7}, packCountry("HU"): {47.2, 19.5},
	packCountry("RO"): {45.9, 25.0}, packCountry("BG"): {42.7, 25.5}, packCountry("GR"): {39.1, 21.8},
	packCountry("RS"): {44.0, 21.0}, packCountry("HR"): {45.1, 15.2}, packCountry("SI"): {46.2, 15.0},
	packCountry("UA"): {48.4, 31.2}, packCountry("BY"): {53.7, 28.0}, packCountry("RU"): {61.5, 105.3},
	packCountry("EE"): {58.6, 25.0}, packCountry("LV"): {56.9, 24.6}, packCountry("LT"): {55.2, 23.9},
	packCountry("TR"): {39.0, 35.2}, packCountry("IL"): {31.0, 34.9}, packCountry("SA"): {23.9, 45.1},
	packCountry("AE"): {23.4, 53.8}, packCountry("QA"): {25.4, 51.2}, packCountry("IR"): {32.4, 53.7},
	packCountry("IQ"): {33.2, 43.7}, packCountry("EG"): {26.8, 30.8}, packCountry("MA"): {31.8, -7.1},
	packCountry("DZ"): {28.0, 1.7}, packCountry("TN"): {33.9, 9.5}, packCountry("NG"): {9.1, 8.7},
	packCountry("GH"): {7.9, -1.0}, packCountry("KE"): {-0.0, 37.9}, packCountry("ET"): {9.1, 40.5},
	packCountry("ZA"): {-30.6, 22.9}, packCountry("IN"): {20.6, 79.0}, packCountry("PK"): {30.4, 69.3},
	packCountry("BD"): {23.7, 90.4}, packCountry("LK"): {7.9, 80.8}, packCountry("CN"): {35.9, 104.2},
	packCountry("HK"): {22.3, 114.2}, packCountry("TW"): {23.7, 121.0}, packCountry("JP"): {36.2, 138.3},
	packCountry("KR"): {35.9, 127.8}, packCountry("KP"): {40.3, 127.5}, packCountry("SG"): {1.35, 103.8},
	packCountry("MY"): {4.2, 102.0}, packCountry("TH"): {15.9, 101.0}, packCountry("VN"): {14.1, 108.3},
	packCountry("PH"): {12.9, 121.8}, packCountry("ID"): {-0.8, 113.9}, packCountry("AU"): {-25.3, 133.8},
	packCountry("NZ"): {-40.9, 174.9}, packCountry("KZ"): {48.0, 66.9}, packCountry("UZ"): {41.4, 64.6},
}

// distanceKm is the great-circle distance between two countries' centroids;
// ok is false when either is not in the table.
func distanceKm(a, b country) (float64, bool) {
	pa, oka := centroids[a]
	pb, okb := centroids[b]
	if !oka || !okb {
		return 0, false
	}
	const earthRadiusKm = 6371.0
	lat1, lat2 := pa[0]*math.Pi/180, pb[0]*math.Pi/180
	dLat := lat2 - lat1
	dLon := (pb[1] - pa[1]) * math.Pi / 180
	h := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1)*math.Cos(lat2)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusKm * math.Asin(math.Sqrt(h)), true
}
