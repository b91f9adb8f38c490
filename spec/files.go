package spec

import "fmt"

// File is one definition file held in memory: Name is what positions and errors
// print (a path, or "repo:path" for a file from Git), Data its content.
type File struct {
	Name string
	Data []byte
}

// ParseFiles decodes and validates several in-memory files as one set, exactly
// as Load does for files on disk: names must be unique across all of them and
// references resolve across them. A file over Load's 16 MiB is refused as
// Load refuses it, wherever it came from (a Git source, an applied snapshot).
func ParseFiles(files []File) (*Set, error) {
	return parseAll(len(files), func(i int) (string, []byte, error) {
		if len(files[i].Data) > maxFileSize {
			return files[i].Name, nil, errTooLarge
		}
		return files[i].Name, files[i].Data, nil
	}, nil)
}

// ReadFiles reads the definition files under path as Load finds them: path
// itself when it is a file, else the *.yaml and *.yml files of the tree in
// lexical order, hidden entries skipped; each at most 16 MiB, as Load allows.
// A tree without any gives no files and no error (a watched directory that
// declares nothing yet). A path that does not exist gives an error matching
// fs.ErrNotExist; on any other error the files read before it are returned
// with it.
func ReadFiles(path string) ([]File, error) {
	names, err := findFiles(path)
	files := make([]File, 0, len(names))
	for _, name := range names {
		data, rerr := readFile(name)
		if rerr != nil {
			return files, fmt.Errorf("%s: %s", name, readErr(name, rerr))
		}
		files = append(files, File{Name: name, Data: data})
	}
	return files, err
}
